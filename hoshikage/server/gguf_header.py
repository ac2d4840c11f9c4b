"""A model file's kind from its GGUF header, without loading it; the admin API's path check.

Used to label registry entries (``hoshikage list``, ``GET /v1/models``) as autoregressive or
diffusion before they are ever loaded; once loaded, ``Model.is_diffusion`` is the authority.
The header is read by :func:`hoshikage.gguf_file.read_architecture`, only up to
``general.architecture`` (the first key llama.cpp's converters and the gguf package write),
bounded by the file's size, and remembered by (path, size, mtime, inode): a listing reads
each file once, whether it succeeded or not. FIFOs, devices and sockets are never opened.
"""
from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path

from ..errors import ModelLoadError
from ..gguf_file import file_kind, read_architecture

__all__ = ["DIFFUSION_ARCHS", "guess_kind", "read_architecture", "check_model_path"]

# llama.cpp: llama_model_is_diffusion() is true for these architectures.
DIFFUSION_ARCHS = frozenset({"llada", "llada-moe", "dream", "rnd1"})
_CACHE_SIZE = 1024
_kinds: OrderedDict[tuple, str | None] = OrderedDict()
_kinds_lock = threading.Lock()


def guess_kind(path: str | os.PathLike) -> str | None:
    """"diffusion", "autoregressive", or None when the header cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _kinds_lock:
        if key in _kinds:
            _kinds.move_to_end(key)
            return _kinds[key]
    arch = read_architecture(path)
    kind = None if arch is None else "diffusion" if arch in DIFFUSION_ARCHS else "autoregressive"
    with _kinds_lock:
        _kinds[key] = kind
        while len(_kinds) > _CACHE_SIZE:
            _kinds.popitem(last=False)
    return kind


def check_model_path(raw: str, allowed: list[Path]) -> Path:
    """The resolved path of a GGUF file that ``POST /admin/models`` may register.

    The order matters: the path is resolved (symlinks, ``..``) and checked against the allowed
    folders *before* anything is opened, so a path outside them gets the same answer whether
    it exists or not, and its bytes are never read. Inside, only a regular file is opened
    (never blocking), and the error names what it is, not what it contains. Raises
    ModelLoadError; blocking file-system work, so call it off the event loop.
    """
    try:
        path = Path(raw).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a loop of links
        raise ModelLoadError(f"unusable model path {raw[:200]!r}: {exc}") from None
    if not any(path == d or d in path.parents for d in allowed):
        raise ModelLoadError(f"{path} is outside the folders models may be registered from "
                             f"({', '.join(map(str, allowed))}; set ADMIN_MODEL_DIRS to change them)")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelLoadError(f"model file is not readable: {path} ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelLoadError(f"model path is a directory, not a GGUF file: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"model path is {file_kind(st.st_mode)}, not a regular file: {path}")
    from ..model import check_gguf_file  # opens it non-blocking and reads the magic only

    return check_gguf_file(path)
