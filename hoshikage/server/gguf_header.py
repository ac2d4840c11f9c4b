"""Read a GGUF file's architecture from its header without loading the model.

Used to label registry entries (``hoshikage list``, ``GET /v1/models``) as autoregressive or
diffusion before they are ever loaded; once loaded, ``Model.is_diffusion`` is the authority.
Only the key/value section is read, and only until ``general.architecture`` is found (it is
the first key that llama.cpp's converter and the gguf package write).
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO

# llama.cpp: llama_model_is_diffusion() is true for these architectures.
DIFFUSION_ARCHS = frozenset({"llada", "llada-moe", "dream", "rnd1"})

# GGUF value types -> struct format of a scalar (8 = string, 9 = array).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_MAX_KEYS = 64


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)


def _string(f: BinaryIO) -> str:
    (n,) = _read(f, "Q")
    if n > 1 << 20:
        raise ValueError("implausible GGUF string length")
    return f.read(n).decode("utf-8", "replace")


def _skip(f: BinaryIO, vtype: int) -> None:
    if vtype == 8:
        (n,) = _read(f, "Q")
        f.seek(n, os.SEEK_CUR)
    elif vtype == 9:
        etype, count = _read(f, "IQ")
        if etype in _SCALARS:
            f.seek(struct.calcsize("<" + _SCALARS[etype]) * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip(f, etype)
    elif vtype in _SCALARS:
        f.seek(struct.calcsize("<" + _SCALARS[vtype]), os.SEEK_CUR)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_architecture(path: str | os.PathLike) -> str | None:
    """``general.architecture`` of a GGUF file, or None if the file cannot be read as GGUF."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            _version, _n_tensors, n_kv = _read(f, "IQQ")
            for _ in range(min(n_kv, _MAX_KEYS)):
                key = _string(f)
                (vtype,) = _read(f, "I")
                if key == "general.architecture" and vtype == 8:
                    return _string(f)
                _skip(f, vtype)
    except (OSError, ValueError, struct.error):
        return None
    return None


def guess_kind(path: str | os.PathLike) -> str | None:
    """"diffusion", "autoregressive", or None when the header cannot be read."""
    arch = read_architecture(path)
    if arch is None:
        return None
    return "diffusion" if arch in DIFFUSION_ARCHS else "autoregressive"
