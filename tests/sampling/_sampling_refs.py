"""Builds the C++ reference harnesses in tests/sampling/native/ (skips when it cannot).

They need g++ and, for the llama.cpp ones, a cached llama.cpp build (``build_llama.py``):
``libllama.so`` under ``~/.cache/hoshikage/build/*/bin`` and the source tree its
``hoshikage-build.json`` names (``source_dir``). Binaries are cached per source hash in a temp folder.
"""
from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NATIVE = Path(__file__).parent / "native"


def cache_root() -> Path:
    from hoshikage._ffi._loader import cache_dir  # the one rule, shared with build_llama.py

    return cache_dir()


def require_gxx() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: C++ reference checks need a C++ compiler")
    return gxx


def _source_of(build: Path) -> Path | None:
    """The llama.cpp tree a build was made from: its manifest's ``source_dir``."""
    try:
        tree = Path(json.loads((build / "hoshikage-build.json").read_text())["source_dir"])
    except (OSError, ValueError, KeyError):
        return None
    return tree if (tree / "include/llama.h").exists() else None


def llama_build() -> tuple[Path, Path]:
    """(llama.cpp source tree, build folder holding bin/libllama.so) of one build, or skip.

    The tree is the one the build's manifest names, so a harness is never compiled against a
    different llama.cpp than the library it links (several sources may be cached)."""
    root = cache_root()
    builds = []
    current = root / "current.json"
    if current.exists():
        try:
            builds.append(Path(json.loads(current.read_text())["build_dir"]))
        except (ValueError, KeyError):
            pass
    builds += [Path(p).parent.parent for p in sorted(glob.glob(str(root / "build/*/bin/libllama.so")))]
    for build in builds:
        tree = _source_of(build)
        if tree is not None and (build / "bin/libllama.so").exists() and (build / "bin/libggml-base.so").exists():
            return tree, build
    pytest.skip(f"no cached llama.cpp build with its source tree under {root} (run build_llama.py)")


def _flags_for(build: Path, target: str) -> list[str]:
    """The CXX_FLAGS cmake used for a llama.cpp target, so the harness compiles alike."""
    f = build / "llama.cpp" / target / "flags.make"
    if f.exists():
        for line in f.read_text().splitlines():
            if line.startswith("CXX_FLAGS"):
                return [x for x in line.split("=", 1)[1].split() if not x.startswith("-W")]
    return ["-O3", "-DNDEBUG"]


def _compile(name: str, sources: list[Path], args: list[str], deps: tuple = ()) -> Path:
    gxx = require_gxx()
    h = hashlib.sha256()
    for s in (*sources, *deps):
        h.update(s.read_bytes())
    h.update(" ".join(args).encode())
    out_dir = Path(tempfile.gettempdir()) / "hoshikage-sampling-tests"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{name}-{h.hexdigest()[:16]}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        proc = subprocess.run([gxx, *map(str, sources), *args, "-o", str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"compiling {name} failed:\n{proc.stderr[-3000:]}")
        tmp.rename(out)
    return out


def _llama_link(tree: Path, build: Path) -> list[str]:
    lib = build / "bin"
    return [f"-I{tree}/include", f"-I{tree}/ggml/include", f"-L{lib}", "-lllama", "-lggml-base",
            f"-Wl,--disable-new-dtags,-rpath,{lib}"]


def stl_ref() -> Path:
    return _compile("stl_ref", [NATIVE / "stl_ref.cpp"], ["-O2", "-std=c++17"])


def rng_ref() -> Path:
    return _compile("rng_ref", [NATIVE / "rng_ref.cpp"], ["-O2", "-std=c++17"])


def chain_ref() -> Path:
    tree, build = llama_build()
    return _compile("chain_ref", [NATIVE / "chain_ref.cpp"],
                    ["-O2", "-std=c++17", *_llama_link(tree, build)])


def loop_ref() -> ctypes.CDLL:
    tree, build = llama_build()
    flags = _flags_for(build, "examples/diffusion/CMakeFiles/llama-diffusion.dir")
    if any(f.startswith("-m") for f in flags):
        pytest.skip(f"llama-diffusion was built with ISA flags {flags}; the harness would differ")
    src = [NATIVE / "loop_ref.cpp"]  # it #includes examples/diffusion/diffusion.cpp
    inc = [f"-I{tree}/common", f"-I{tree}/examples/diffusion", f"-I{tree}/vendor"]
    # The stubs (llama_get_logits, llama_process, ...) must stay hidden: exported, they would
    # also satisfy libllama's own calls once this library has loaded it, and crash later
    # tests that use the real libllama in the same process.
    so = _compile("loop_ref.so", src, [*flags, "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden",
                                       "-Wl,-Bsymbolic",
                                       *inc, *_llama_link(tree, build)],
                  deps=(tree / "examples/diffusion/diffusion.cpp", tree / "src/llama-sampler.cpp"))
    return ctypes.CDLL(str(so))


def libm() -> ctypes.CDLL:
    return ctypes.CDLL("libm.so.6")
