"""The autoregressive twin of a diffusion GGUF: the same file with only its architecture renamed.

llama.cpp's ``llama`` graph computes what ``llada`` computes and ``qwen2`` what ``dream`` computes;
the autoregressive archs also get KV memory, which the diffusion archs never do (the prefix
cache, generation/prefix_cache.py, needs it). The names are renames of equal length, so
rewriting ``general.architecture`` and the ``<arch>.`` prefix of the metadata keys in place
keeps every other byte, every tensor offset included.

The twin is a cached copy (``$HOSHIKAGE_CACHE_DIR/twins``), named by the source's contents: its
size, its header and the first and last MiB of its tensor data, so the same model under another
path (the server's RAM-disk copy, made anew at each start) finds the same twin. One file copy the
first time, then an ordinary mmap'd load. LLaDA-MoE and RND1 have no
twin of equal length and are refused (TwinError).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ._ffi._loader import cache_dir
from .gguf_file import read_header

__all__ = ["TWIN_ARCH", "TwinError", "twin_arch", "twin_path", "make_twin"]

#: diffusion arch -> the autoregressive arch whose graph computes the same logits
TWIN_ARCH = {"llada": "llama", "dream": "qwen2"}
_ARCH_KEY = "general.architecture"
_VERSION = 2  # bump when the way twins are written changes (old ones are then not reused)
_SAMPLE = 1 << 20  # bytes of tensor data hashed at each end of the file


class TwinError(ValueError):
    """The model has no autoregressive twin (its architecture is not in TWIN_ARCH)."""


def twin_arch(arch: str | None) -> str:
    """The twin's architecture for ``arch``, or TwinError naming the ones that have one."""
    twin = TWIN_ARCH.get(arch or "")
    if twin is None:
        raise TwinError(f"the prefix cache needs an autoregressive twin of the model's architecture; "
                        f"{arch!r} has none (supported: {', '.join(sorted(TWIN_ARCH))})")
    return twin


def twin_path(source: str | os.PathLike, folder: Path | None = None) -> Path:
    """Where the twin of ``source`` is (or would be) cached: named by its contents."""
    src = Path(source)
    header = read_header(src, arrays=False, tensors=True)
    digest = hashlib.sha256(f"{_VERSION}|{header.size}|".encode())
    with open(src, "rb") as f:
        digest.update(f.read(header.data_start))  # metadata and tensor table
        digest.update(f.read(_SAMPLE))
        f.seek(max(header.data_start, header.size - _SAMPLE))
        digest.update(f.read(_SAMPLE))
    return (folder or cache_dir() / "twins") / f"{src.stem}.{digest.hexdigest()[:16]}.twin.gguf"


def make_twin(source: str | os.PathLike, folder: Path | None = None) -> Path:
    """The twin of ``source``: the cached copy if there is one, else a new one (written to a
    temporary name, renamed into place). Raises TwinError for an arch without a twin."""
    out = twin_path(source, folder)
    if out.exists():
        return out
    arch = read_header(source, keys={_ARCH_KEY}, arrays=False, tensors=False,
                       stop_after=_ARCH_KEY).kv.get(_ARCH_KEY)
    twin_arch(arch if isinstance(arch, str) else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        _rename_arch(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _rename_arch(path: Path) -> None:
    """Rewrite, in place, ``general.architecture`` and every ``<arch>.`` key prefix of ``path``
    (a copy: its own header is read, so nothing can change between reading and writing)."""
    header = read_header(path, arrays=False, tensors=False)
    arch = header.kv.get(_ARCH_KEY)
    twin = twin_arch(arch if isinstance(arch, str) else None).encode()
    old = arch.encode()
    if len(twin) != len(old):  # TWIN_ARCH pairs names of equal length; offsets depend on it
        raise TwinError(f"{arch!r} and its twin {twin.decode()!r} differ in length")
    with open(path, "r+b") as f:
        fd = f.fileno()
        for key, (key_at, value_at) in header.spans.items():
            if key.startswith(arch + "."):
                os.pwrite(fd, twin, key_at + 8)  # after the key's uint64 length
        _, value_at = header.spans[_ARCH_KEY]
        os.pwrite(fd, twin, value_at + 4 + 8)  # after the value's type (uint32) and length (uint64)
    check = read_header(path, keys={_ARCH_KEY}, arrays=False, tensors=False).kv.get(_ARCH_KEY)
    if check != twin.decode():
        raise TwinError(f"writing the twin of {path.name} failed: its architecture reads {check!r}")
