"""Where the native library is looked for, and the error that lists every place tried.

Order (first hit wins):
1. ``HOSHIKAGE_LIBLLAMA`` — a path to ``libllama.so``. Its cdef must come from the same build:
   ``HOSHIKAGE_LLAMA_CDEF`` if set, else the build folder it sits in (``bin/`` beside a
   ``hoshikage-build.json`` naming it) or a ``llama_cdef.h`` beside it, else the build cache's
   when it is the cache's own library; any other library is refused (a cdef from another
   llama.cpp would misdeclare its structs);
2. the build cache written by ``build_llama.py`` (``$HOSHIKAGE_CACHE_DIR/current.json``);
3. ``~/.config/hoshikage/lib/libllama.so``, where Hoshikage 1.0 kept a user-swappable build.

This module never imports cffi; ``hoshikage._ffi`` does.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HoshikageError  # imports nothing (no cffi)

BUILD_COMMAND = "python build_llama.py   (or: make build)"
LIB_NAMES = ("libllama.so", "libllama.dylib", "llama.dll")


class LibraryNotFound(HoshikageError, RuntimeError):
    """No usable libllama was found; the message lists each place tried and why it failed."""


@dataclass
class NativeBuild:
    """What the loader found: the library, its cdef, and the build manifest (may be empty)."""

    library: Path
    cdef: Path
    manifest: dict = field(default_factory=dict)

    @property
    def reference_library(self) -> Path | None:
        path = self.manifest.get("reference_library")
        return Path(path) if path else None

    @property
    def chat_library(self) -> Path | None:
        path = self.manifest.get("chat_library")
        return Path(path) if path else None

    @property
    def tools(self) -> dict[str, str]:
        return dict(self.manifest.get("tools", {}))

    @property
    def llama_cpp_commit(self) -> str:
        return self.manifest.get("llama_cpp_commit", "unknown")


def cache_dir() -> Path:
    """Same rule as build_llama.py: $HOSHIKAGE_CACHE_DIR, else $XDG_CACHE_HOME/hoshikage."""
    env = os.environ.get("HOSHIKAGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hoshikage"


def config_lib_dir() -> Path:
    return Path.home() / ".config" / "hoshikage" / "lib"


def _read_cached_manifest(tried: list[str]) -> dict | None:
    pointer = cache_dir() / "current.json"
    if not pointer.exists():
        tried.append(f"build cache: {pointer} does not exist (nothing built yet)")
        return None
    try:
        build_dir = Path(json.loads(pointer.read_text())["build_dir"])
        manifest = json.loads((build_dir / "hoshikage-build.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        tried.append(f"build cache: {pointer} is unreadable or points at a broken build ({exc})")
        return None
    missing = [k for k in ("library", "cdef") if not Path(manifest.get(k, "")).is_file()]
    if missing:
        tried.append(f"build cache: {build_dir} lacks {', '.join(missing)} (deleted or half-built)")
        return None
    return manifest


def _same_file(a: str | Path | None, b: Path) -> bool:
    try:
        return a is not None and Path(a).samefile(b)
    except OSError:
        return False


def _own_build(library: Path) -> NativeBuild | None:
    """The build ``library`` comes from, found beside it: a build folder of build_llama.py
    (``bin/libllama.so`` under a ``hoshikage-build.json`` that names it) or a ``llama_cdef.h``."""
    for folder in (library.parent, library.parent.parent):
        try:
            manifest = json.loads((folder / "hoshikage-build.json").read_text())
        except (OSError, ValueError):
            continue
        if _same_file(manifest.get("library"), library) and Path(manifest.get("cdef", "")).is_file():
            return NativeBuild(library, Path(manifest["cdef"]), manifest)
    cdef = library.parent / "llama_cdef.h"
    return NativeBuild(library, cdef, {}) if cdef.is_file() else None


def _env_build(path: Path, manifest: dict | None, cdef_env: str | None) -> NativeBuild:
    """HOSHIKAGE_LIBLLAMA's library with the cdef of its own build, or LibraryNotFound."""
    cached = manifest if manifest and _same_file(manifest.get("library"), path) else None
    if cdef_env:
        return NativeBuild(path, Path(cdef_env), cached or {})
    if cached:
        return NativeBuild(path, Path(cached["cdef"]), cached)
    found = _own_build(path)
    if found is None:
        raise LibraryNotFound(
            f"HOSHIKAGE_LIBLLAMA={path} is not the library of the cached build and has no declarations of "
            "its own (no llama_cdef.h beside it, no hoshikage-build.json above it): the cache's cdef comes "
            "from another build and could misdeclare its structs. Set HOSHIKAGE_LLAMA_CDEF to the cdef "
            f"generated from its llama.h, or unset HOSHIKAGE_LIBLLAMA to use the build cache ({BUILD_COMMAND}).")
    return found


def find_native_build() -> NativeBuild:
    """Locate libllama and its cdef, or raise LibraryNotFound naming every place tried."""
    tried: list[str] = []
    manifest = _read_cached_manifest(tried)
    cdef_env = os.environ.get("HOSHIKAGE_LLAMA_CDEF")
    env_lib = os.environ.get("HOSHIKAGE_LIBLLAMA")
    if env_lib:
        path = Path(env_lib).expanduser()
        if path.is_file():
            return _env_build(path, manifest, cdef_env)
        tried.append(f"HOSHIKAGE_LIBLLAMA={env_lib}: no such file")
    if manifest:
        return NativeBuild(Path(manifest["library"]), Path(manifest["cdef"]), manifest)
    for name in LIB_NAMES:
        path = config_lib_dir() / name
        if path.is_file():
            local_cdef = path.parent / "llama_cdef.h"
            if local_cdef.is_file():
                return NativeBuild(path, local_cdef, {})
            if cdef_env:
                return NativeBuild(path, Path(cdef_env), {})
            tried.append(f"{path}: found a library but no cdef (put llama_cdef.h beside it, or set "
                         "HOSHIKAGE_LLAMA_CDEF)")
    if not any(str(config_lib_dir()) in t for t in tried):
        tried.append(f"{config_lib_dir()}: no libllama there")
    lines = "\n  - ".join(tried)
    raise LibraryNotFound(
        f"libllama was not found. Places tried:\n  - {lines}\nBuild it with: {BUILD_COMMAND}"
    )
