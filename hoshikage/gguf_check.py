"""Structural check of a GGUF file before llama.cpp sees it.

llama.cpp rejects most malformed files with an error, but it aborts the whole process
(``GGML_ASSERT``) on a few values it only asserts, and it is the host process that dies. This
reads the header and the tensor table with bounds checks and refuses, with a message naming
the problem, what llama.cpp would crash on or what plainly cannot work:

- counts, string lengths, array lengths and value types that do not fit the file;
- tensor tables whose dimensions, types, data offsets or sizes are impossible or run past
  the end of the file (a truncated or lying file);
- the hyper-parameters llama.cpp only asserts: ``<arch>.block_count`` (1..512), expert
  counts, ``<arch>.rope.scaling.type``; and a vocabulary listing the same token text twice.

It reads only the header (one pass; a large vocabulary takes a fraction of a second) and
never the tensor data. What it accepts may still fail to load; llama.cpp then says why.
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from .errors import ModelLoadError

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS (llama-hparams.h)
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
_INT64_MAX = 2**63 - 1


class _Bad(Exception):
    pass


def _quant_sizes() -> dict[int, tuple[int, int]]:
    """ggml type -> (block size, bytes per block), from the gguf package."""
    from gguf.constants import GGML_QUANT_SIZES  # noqa: PLC0415 - only when a file is checked

    return {int(t): (int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}


def check_gguf_structure(path: str | os.PathLike) -> dict[str, object]:
    """Raise ModelLoadError naming what is wrong with ``path``'s header or tensor table.

    Returns the scalar metadata (strings and numbers; arrays are skipped) on success.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise ModelLoadError(f"GGUF file is truncated ({size} bytes, shorter than its header): {p}")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _check(data, size)
    except _Bad as exc:
        raise ModelLoadError(f"corrupt GGUF file {p}: {exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"model file is not readable: {p} ({exc.strerror or exc})") from exc


def _check(data: mmap.mmap, size: int) -> dict[str, object]:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3):
        raise _Bad(f"GGUF version {version} is not supported (2 or 3)")
    # Each metadata entry takes at least 12 bytes, each tensor entry at least 24.
    if n_kv > size // 12:
        raise _Bad(f"the header claims {n_kv} metadata entries, more than the file's {size} bytes can hold")
    if n_tensors > size // 24:
        raise _Bad(f"the header claims {n_tensors} tensors, more than the file's {size} bytes can hold")
    off = 24

    def need(o: int, n: int, what: str) -> None:
        if n < 0 or o + n > size:
            raise _Bad(f"{what} runs past the end of the file (truncated?)")

    def u64(o: int, what: str) -> int:
        need(o, 8, what)
        return struct.unpack_from("<Q", data, o)[0]

    def string(o: int, what: str, keep: bool) -> tuple[str | None, int]:
        n = u64(o, what)
        need(o + 8, n, f"{what} ({n} bytes)")
        return (bytes(data[o + 8:o + 8 + n]).decode("utf-8", "replace") if keep else None), o + 8 + n

    token_hashes: list[np.ndarray] = []  # hashes of the vocabulary's texts (no per-token objects kept)

    def value(t: int, o: int, what: str, tokens: bool = False) -> tuple[object, int]:
        if t == _STRING:
            return string(o, what, keep=True)
        if t == _ARRAY:
            need(o, 12, what)
            et, count = struct.unpack_from("<IQ", data, o)
            o += 12
            if et in _SCALAR:
                n = struct.calcsize("<" + _SCALAR[et]) * count
                need(o, n, f"{what} ({count} elements)")
                return None, o + n
            if et == _STRING:
                if count > (size - o) // 8:
                    raise _Bad(f"{what} claims {count} strings, more than the file can hold")
                hashes = np.empty(count if tokens else 0, dtype=np.int64)
                for i in range(count):
                    n = u64(o, what)
                    need(o + 8, n, what)
                    if tokens:
                        hashes[i] = hash(data[o + 8:o + 8 + n])
                    o += 8 + n
                if tokens:
                    token_hashes.append(hashes)
                return None, o
            if et == _ARRAY:
                raise _Bad(f"{what}: nested arrays are not supported")
            raise _Bad(f"{what}: unknown array element type {et}")
        if t in _SCALAR:
            fmt = "<" + _SCALAR[t]
            need(o, struct.calcsize(fmt), what)
            return struct.unpack_from(fmt, data, o)[0], o + struct.calcsize(fmt)
        raise _Bad(f"{what}: unknown value type {t}")

    meta: dict[str, object] = {}
    meta_offsets: dict[str, int] = {}
    present: set[str] = set()
    for i in range(n_kv):
        key, off = string(off, f"metadata key #{i}", keep=True)
        need(off, 4, f"type of {key!r}")
        (t,) = struct.unpack_from("<I", data, off)
        meta_offsets[str(key)] = off + 4
        val, off = value(t, off + 4, f"metadata {key!r}", tokens=key == "tokenizer.ggml.tokens")
        present.add(str(key))
        if val is not None:
            meta[str(key)] = val

    alignment = meta.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment must be a power of two, got {alignment!r}")

    sizes = _quant_sizes()
    tensors = []
    names: set[str] = set()
    for i in range(n_tensors):
        name, off = string(off, f"name of tensor #{i}", keep=True)
        need(off, 4, f"tensor {name!r}")
        (n_dims,) = struct.unpack_from("<I", data, off)
        if not 1 <= n_dims <= _MAX_DIMS:
            raise _Bad(f"tensor {name!r} has {n_dims} dimensions (1 to {_MAX_DIMS})")
        need(off + 4, 8 * n_dims + 12, f"tensor {name!r}")
        dims = struct.unpack_from(f"<{n_dims}Q", data, off + 4)
        ggml_type, rel = struct.unpack_from("<IQ", data, off + 4 + 8 * n_dims)
        off += 4 + 8 * n_dims + 12
        if name in names:
            raise _Bad(f"tensor {name!r} appears twice")
        names.add(str(name))
        count = 1
        for d in dims:
            if d > _INT64_MAX:
                raise _Bad(f"tensor {name!r} has an impossible dimension {d}")
            count *= d
            if count > _INT64_MAX:
                raise _Bad(f"tensor {name!r}: its element count overflows ({list(dims)})")
        if ggml_type not in sizes:
            raise _Bad(f"tensor {name!r} has unknown ggml type {ggml_type}")
        block, type_size = sizes[ggml_type]
        if dims[0] % block:
            raise _Bad(f"tensor {name!r}: first dimension {dims[0]} is not a multiple of its block size {block}")
        if rel % alignment:
            raise _Bad(f"tensor {name!r}: data offset {rel} is not aligned to {alignment}")
        tensors.append((name, rel, count // block * type_size))
    data_start = -(-off // alignment) * alignment
    for name, rel, nbytes in tensors:
        end = data_start + rel + nbytes
        if end > size:
            raise _Bad(f"tensor {name!r} needs bytes {data_start + rel}..{end} but the file has {size} "
                       "(truncated, or the tensor's size in the header is wrong)")
    _check_hparams(meta, present)
    for hashes in token_hashes:  # llama.cpp asserts every token text is unique
        if np.unique(hashes).size != hashes.size:
            dup = _duplicate_token(data, meta_offsets["tokenizer.ggml.tokens"])
            if dup is not None:
                raise _Bad(f"the vocabulary (tokenizer.ggml.tokens) lists {dup.decode('utf-8', 'replace')!r} twice")
    return meta


def _duplicate_token(data: mmap.mmap, o: int) -> bytes | None:
    """The first token text listed twice (exact comparison, after a hash collision was seen)."""
    _, count = struct.unpack_from("<IQ", data, o)
    o += 12
    seen: set[bytes] = set()
    for _ in range(count):
        (n,) = struct.unpack_from("<Q", data, o)
        text = bytes(data[o + 8:o + 8 + n])
        if text in seen:
            return text
        seen.add(text)
        o += 8 + n
    return None


def _check_hparams(meta: dict[str, object], present: set[str]) -> None:
    """The hyper-parameters llama.cpp asserts on (an abort) rather than rejecting."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return  # llama.cpp refuses a file without an architecture with an error

    def num(key: str) -> int | None:
        v = meta.get(f"{arch}.{key}")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    layers = num("block_count")
    if layers is not None and not 1 <= layers <= MAX_LAYERS:
        raise _Bad(f"{arch}.block_count is {layers}; llama.cpp supports 1 to {MAX_LAYERS} layers")
    nextn = num("nextn_predict_layers")
    if layers is not None and nextn is not None and nextn > layers:
        raise _Bad(f"{arch}.nextn_predict_layers ({nextn}) exceeds block_count ({layers})")
    experts, used = num("expert_count") or 0, num("expert_used_count")
    if experts > MAX_EXPERTS:
        raise _Bad(f"{arch}.expert_count is {experts}; llama.cpp supports at most {MAX_EXPERTS}")
    if used is None and f"{arch}.expert_used_count" in present:
        used = None  # an array per layer: llama.cpp checks it
    elif (used or 0) > experts or (experts > 0 and not used):
        raise _Bad(f"{arch}.expert_used_count ({used}) must be between 1 and expert_count ({experts})"
                   if experts else f"{arch}.expert_used_count is {used} but the model has no experts")
    groups = num("expert_group_count") or 0
    if groups and (experts == 0 or groups >= experts):
        raise _Bad(f"{arch}.expert_group_count ({groups}) must be below expert_count ({experts})")
    rope = meta.get(f"{arch}.rope.scaling.type")
    if rope is not None and rope not in ROPE_SCALING_TYPES:
        raise _Bad(f"{arch}.rope.scaling.type is {rope!r}; llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}")
