"""One bounds-checked reader of GGUF headers: metadata, tensor table, where the data starts.

Everything that reads a GGUF file without llama.cpp goes through :func:`read_header`: the
structural check before loading (:mod:`hoshikage.gguf_check`), the registry's architecture
peek (:func:`read_architecture`) and the test-model tools (:func:`read_gguf`). Every read is
checked against the file's size, so a truncated or lying file raises
:class:`GGUFFormatError` naming what runs past the end, never an IndexError or a huge
allocation. Only the header is read (through mmap); tensor data is touched only by
:meth:`GGUFHeader.tensor`.
"""
from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GGUFFormatError", "NotRegularFileError", "TensorInfo", "GGUFHeader", "read_header", "read_gguf",
           "read_architecture", "open_regular_file", "file_kind", "TOKENS_KEY", "ALIGNMENT_KEY",
           "MAX_ARRAY_ELEMENTS", "MAX_STRING_ARRAY", "MAX_KV", "MAX_TENSORS"]

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
MAX_DIMS = 4  # GGML_MAX_DIMS
_TENSOR_DTYPES = {0: np.float32, 1: np.float16}  # GGML_TYPE_F32, GGML_TYPE_F16
TOKENS_KEY = "tokenizer.ggml.tokens"
ALIGNMENT_KEY = "general.alignment"
MAX_ARRAY_ELEMENTS = 2**30  # GGUF_MAX_ARRAY_ELEMENTS (ggml/src/gguf.cpp): llama.cpp refuses more
# Each string costs a Python-level step to walk, so a lying count in a large (or sparse) file
# would hold a thread for minutes: the largest real vocabularies and merge lists have < 1M.
MAX_STRING_ARRAY = 2**24  # strings in all the header's arrays together
MAX_KV = 2**16  # metadata entries (real files have under a few hundred)
MAX_TENSORS = 2**20  # tensor entries (the largest MoE files have tens of thousands)


class GGUFFormatError(ValueError):
    """The bytes are not a well-formed GGUF header; the message says what is wrong."""


class NotRegularFileError(OSError):
    """The path is a FIFO, a device, a socket or a directory: reading it could block or never end."""


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("a FIFO", "a directory", ...)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular_file(path: str | os.PathLike) -> int:
    """A read-only file descriptor for ``path``, which must be a regular file.

    The type is checked before opening (a FIFO would block the open, a device would never
    end), the open is non-blocking, and the type is checked again on the descriptor, so a
    file swapped in between is refused too. Raises NotRegularFileError, or the OSError of
    stat/open (FileNotFoundError, PermissionError, ...).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(errno.EINVAL, f"{file_kind(st.st_mode)}, not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(errno.EINVAL, f"{file_kind(mode)}, not a regular file")
    return fd


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0 first), as gguf.GGUFReader's ReaderTensor.shape
    ggml_type: int
    offset: int  # absolute file offset of the data


@dataclass
class GGUFHeader:
    """What :func:`read_header` found.

    kv: metadata values (strings decoded as UTF-8 with replacement; arrays as lists, or None
        when not materialised); tensors: by name, in file order; data_start: absolute offset
        of the tensor data section; size: file size in bytes; token_hashes: int64 [n_vocab]
        hashes of the vocabulary's texts when asked for; spans: each metadata key's (offset of
        its key string, offset of its value's type field), absolute, for in-place header edits.
    """

    path: Path
    version: int
    kv: dict[str, object]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    data_start: int = 0
    size: int = 0
    token_hashes: np.ndarray | None = None
    token_array_offset: int | None = None  # where the vocabulary's string array starts
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    def token_bytes(self) -> list[bytes]:
        """The vocabulary's texts as raw bytes (read again from the file)."""
        if self.token_array_offset is None:
            return []
        with os.fdopen(open_regular_file(self.path), "rb") as f, \
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _, count = struct.unpack_from("<IQ", data, self.token_array_offset)
            o, out = self.token_array_offset + 12, []
            for _ in range(count):
                (n,) = struct.unpack_from("<Q", data, o)
                out.append(bytes(data[o + 8:o + 8 + n]))
                o += 8 + n
            return out

    def tensor(self, name: str) -> np.ndarray:
        """A tensor's data as float32 in numpy order (reversed ggml shape); F32/F16 only."""
        info = self.tensors[name]
        dtype = _TENSOR_DTYPES.get(info.ggml_type)
        if dtype is None:
            raise NotImplementedError(f"{name}: ggml type {info.ggml_type} is not F32/F16")
        count = int(np.prod(info.shape))
        data = np.fromfile(self.path, dtype=dtype, count=count, offset=info.offset)
        return data.astype(np.float32).reshape(tuple(reversed(info.shape)))


def read_header(path: str | os.PathLike, *, keys: set[str] | None = None, arrays: bool = True,
                tensors: bool = True, stop_after: str | None = None,
                hash_tokens: bool = False) -> GGUFHeader:
    """Parse ``path``'s header.

    keys: only these metadata keys are kept (default: all); arrays: materialise array
    values as lists (otherwise they are bounds-checked, skipped and stored as None);
    tensors: read the tensor table; stop_after: stop right after this metadata key (no
    tensor table); hash_tokens: hash every text of the vocabulary into ``token_hashes``.
    Raises GGUFFormatError for a malformed header, OSError for an unreadable file
    (NotRegularFileError for a FIFO, device, socket or directory: never opened blocking).
    Work and memory are bounded by the file's size: every count is checked against the bytes
    left before anything is allocated for it.
    """
    p = Path(path)
    with os.fdopen(open_regular_file(p), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise GGUFFormatError(f"the file is truncated ({size} bytes, shorter than a GGUF header)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _Parser(data, size, arrays, hash_tokens).parse(p, keys, tensors, stop_after)


def read_gguf(path: str | os.PathLike, keys: set[str] | None = None, tensors: bool = True) -> GGUFHeader:
    """All metadata (or only ``keys``), arrays as lists, and the tensor table."""
    return read_header(path, keys=keys, tensors=tensors)


def read_architecture(path: str | os.PathLike) -> str | None:
    """``general.architecture`` of a GGUF file, or None when it cannot be read as GGUF."""
    try:
        arch = read_header(path, keys={"general.architecture"}, arrays=False, tensors=False,
                           stop_after="general.architecture").kv.get("general.architecture")
    except (OSError, GGUFFormatError):
        return None
    return arch if isinstance(arch, str) else None


class _Parser:
    """Walks an mmap'd header; every read is checked against ``size``."""

    def __init__(self, data: mmap.mmap, size: int, arrays: bool, hash_tokens: bool) -> None:
        self.data, self.size, self.arrays, self.hash_tokens = data, size, arrays, hash_tokens
        self.token_hashes: np.ndarray | None = None
        self.strings_left = MAX_STRING_ARRAY  # shared by every string array of the header

    def need(self, o: int, n: int, what: str) -> None:
        if n < 0 or o + n > self.size:
            raise GGUFFormatError(f"{what} runs past the end of the file (truncated?)")

    def unpack(self, fmt: str, o: int, what: str) -> tuple:
        self.need(o, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.data, o)

    def string(self, o: int, what: str, keep: bool = True) -> tuple[str | None, int]:
        (n,) = self.unpack("<Q", o, what)
        self.need(o + 8, n, f"{what} ({n} bytes)")
        text = bytes(self.data[o + 8:o + 8 + n]).decode("utf-8", "replace") if keep else None
        return text, o + 8 + n

    def value(self, t: int, o: int, what: str, keep: bool, tokens: bool = False) -> tuple[object, int]:
        if t == _STRING:
            return self.string(o, what, keep)
        if t in _SCALAR:
            fmt = "<" + _SCALAR[t]
            return (self.unpack(fmt, o, what)[0] if keep else None), o + struct.calcsize(fmt)
        if t != _ARRAY:
            raise GGUFFormatError(f"{what}: unknown value type {t}")
        et, count = self.unpack("<IQ", o, what)
        o += 12
        keep = keep and self.arrays
        if count > MAX_ARRAY_ELEMENTS:
            raise GGUFFormatError(f"{what} claims {count} elements; GGUF allows at most {MAX_ARRAY_ELEMENTS}")
        if et in _SCALAR:
            n = struct.calcsize("<" + _SCALAR[et]) * count
            self.need(o, n, f"{what} ({count} elements)")
            items = list(struct.unpack_from(f"<{count}{_SCALAR[et]}", self.data, o)) if keep else None
            return items, o + n
        if et == _STRING:
            if count > (self.size - o) // 8:
                raise GGUFFormatError(f"{what} claims {count} strings, more than the file can hold")
            if count > self.strings_left:
                raise GGUFFormatError(f"{what} claims {count} strings; Hoshikage reads at most "
                                      f"{MAX_STRING_ARRAY} in a header (real vocabularies have under a million)")
            self.strings_left -= count
            return self._strings(o, count, what, keep, tokens and self.hash_tokens)
        if et == _ARRAY:
            raise GGUFFormatError(f"{what}: nested arrays are not supported")
        raise GGUFFormatError(f"{what}: unknown array element type {et}")

    def _strings(self, o: int, count: int, what: str, keep: bool, hashed: bool) -> tuple[object, int]:
        data, items = self.data, ([] if keep else None)
        hashes = np.empty(count if hashed else 0, dtype=np.int64)
        for i in range(count):
            (n,) = self.unpack("<Q", o, what)
            self.need(o + 8, n, what)
            if hashed:
                hashes[i] = hash(data[o + 8:o + 8 + n])
            if keep:
                items.append(bytes(data[o + 8:o + 8 + n]).decode("utf-8", "replace"))
            o += 8 + n
        if hashed:
            self.token_hashes = hashes
        return items, o

    def parse(self, path: Path, keys: set[str] | None, want_tensors: bool,
              stop_after: str | None) -> GGUFHeader:
        data, size = self.data, self.size
        if data[:4] != b"GGUF":
            raise GGUFFormatError("not a GGUF file (it does not start with the GGUF magic bytes)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        if version not in (2, 3):
            raise GGUFFormatError(f"GGUF version {version} is not supported (2 or 3)")
        # Each metadata entry takes at least 12 bytes, each tensor entry at least 24.
        if n_kv > size // 12:
            raise GGUFFormatError(f"the header claims {n_kv} metadata entries, more than the file's "
                                  f"{size} bytes can hold")
        if n_tensors > size // 24:
            raise GGUFFormatError(f"the header claims {n_tensors} tensors, more than the file's "
                                  f"{size} bytes can hold")
        if n_kv > MAX_KV or n_tensors > MAX_TENSORS:
            raise GGUFFormatError(f"the header claims {n_kv} metadata entries and {n_tensors} tensors; "
                                  f"Hoshikage reads at most {MAX_KV} and {MAX_TENSORS}")
        out = GGUFHeader(path, version, {}, size=size)
        off, alignment = 24, 32
        for i in range(n_kv):
            key_at = off
            key, off = self.string(off, f"metadata key #{i}")
            out.spans[str(key)] = (key_at, off)
            (t,) = self.unpack("<I", off, f"type of {key!r}")
            want, at = keys is None or key in keys, off + 4
            val, off = self.value(t, at, f"metadata {key!r}", keep=want or key == ALIGNMENT_KEY,
                                  tokens=key == TOKENS_KEY)
            if key == TOKENS_KEY and t == _ARRAY:
                out.token_array_offset = at
            if key == ALIGNMENT_KEY:
                if not isinstance(val, int) or isinstance(val, bool) or val <= 0 or val & (val - 1):
                    raise GGUFFormatError(f"general.alignment must be a power of two, got {val!r}")
                alignment = val
            if want:
                out.kv[str(key)] = val
            if key == stop_after:
                return out
        out.token_hashes = self.token_hashes
        if not want_tensors:
            return out
        infos = []
        for i in range(n_tensors):
            name, off = self.string(off, f"name of tensor #{i}")
            (n_dims,) = self.unpack("<I", off, f"tensor {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
            dims = self.unpack(f"<{n_dims}Q", off + 4, f"tensor {name!r}")
            ggml_type, rel = self.unpack("<IQ", off + 4 + 8 * n_dims, f"tensor {name!r}")
            off += 4 + 8 * n_dims + 12
            if rel % alignment:
                raise GGUFFormatError(f"tensor {name!r}: data offset {rel} is not aligned to {alignment}")
            infos.append((str(name), tuple(int(d) for d in dims), int(ggml_type), int(rel)))
        out.data_start = -(-off // alignment) * alignment
        for name, shape, ggml_type, rel in infos:
            if name in out.tensors:
                raise GGUFFormatError(f"tensor {name!r} appears twice")
            out.tensors[name] = TensorInfo(name, shape, ggml_type, out.data_start + rel)
        return out
