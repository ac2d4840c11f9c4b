"""A small, fast GGUF reader for tests: metadata, tensor infos, and float tensors.

``gguf.GGUFReader`` builds a numpy view per array element, which takes ~4 s on a file
carrying a 49k-token vocabulary and its merges; this reads the same file in ~0.1 s. It
supports what the generated test models contain (every metadata type; F32/F16 tensors).
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}
_STRING, _ARRAY = 8, 9
_TENSOR_DTYPES = {0: np.float32, 1: np.float16}  # GGML_TYPE_F32, GGML_TYPE_F16
ALIGNMENT_KEY = "general.alignment"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]   # ggml order (ne0 first), as gguf.GGUFReader's ReaderTensor.shape
    ggml_type: int
    offset: int              # absolute file offset of the data


@dataclass
class GGUFContents:
    path: Path
    version: int
    kv: dict[str, object]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def tensor(self, name: str) -> np.ndarray:
        """A tensor's data as float32 in numpy order (reversed ggml shape)."""
        info = self.tensors[name]
        dtype = _TENSOR_DTYPES.get(info.ggml_type)
        if dtype is None:
            raise NotImplementedError(f"{name}: ggml type {info.ggml_type} is not F32/F16")
        count = int(np.prod(info.shape))
        data = np.fromfile(self.path, dtype=dtype, count=count, offset=info.offset)
        return data.astype(np.float32).reshape(tuple(reversed(info.shape)))


def read_gguf(path: str | Path, keys: set[str] | None = None, tensors: bool = True) -> GGUFContents:
    """Parse a GGUF header: all metadata (or only ``keys``) and, if ``tensors``, the tensor
    infos. Arrays become lists; strings are decoded as UTF-8."""
    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse(data, path, keys, tensors)


def _parse(data, path: Path, keys: set[str] | None, want_tensors: bool) -> GGUFContents:
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF v{version} is not supported")
    off = 24

    def read_str(o: int) -> tuple[str, int]:
        n, = struct.unpack_from("<Q", data, o)
        return data[o + 8:o + 8 + n].decode("utf-8"), o + 8 + n

    def skip_str(o: int) -> int:
        return o + 8 + struct.unpack_from("<Q", data, o)[0]

    def read_val(t: int, o: int, want: bool):
        if t == _STRING:
            return read_str(o) if want else (None, skip_str(o))
        if t == _ARRAY:
            st, n = struct.unpack_from("<IQ", data, o)
            o += 12
            if st == _STRING:
                items = []
                for _ in range(n):
                    if want:
                        s, o = read_str(o)
                        items.append(s)
                    else:
                        o = skip_str(o)
                return (items if want else None), o
            if st == _ARRAY:
                items = []
                for _ in range(n):
                    v, o = read_val(_ARRAY, o, want)
                    items.append(v)
                return (items if want else None), o
            fmt = _SCALAR[st]
            vals = list(struct.unpack_from(f"<{n}{fmt}", data, o)) if want else None
            return vals, o + struct.calcsize(fmt) * n
        fmt = _SCALAR[t]
        return (struct.unpack_from("<" + fmt, data, o)[0] if want else None), o + struct.calcsize(fmt)

    kv: dict[str, object] = {}
    alignment = 32
    for _ in range(n_kv):
        key, off = read_str(off)
        t, = struct.unpack_from("<I", data, off)
        off += 4
        want = keys is None or key in keys or key == ALIGNMENT_KEY
        val, off = read_val(t, off, want)
        if key == ALIGNMENT_KEY:
            alignment = int(val)
        if keys is None or key in keys:
            kv[key] = val
    out = GGUFContents(path, version, kv)
    if not want_tensors:
        return out
    infos = []
    for _ in range(n_tensors):
        name, off = read_str(off)
        n_dims, = struct.unpack_from("<I", data, off)
        shape = struct.unpack_from(f"<{n_dims}Q", data, off + 4)
        ggml_type, rel = struct.unpack_from("<IQ", data, off + 4 + 8 * n_dims)
        off += 4 + 8 * n_dims + 12
        infos.append((name, tuple(int(x) for x in shape), ggml_type, rel))
    data_start = -(-off // alignment) * alignment
    out.tensors = {n: TensorInfo(n, s, t, data_start + r) for n, s, t, r in infos}
    return out
