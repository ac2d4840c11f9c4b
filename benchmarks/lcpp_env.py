"""llama-cpp-python in a virtual environment of its own, for the autoregressive comparison.

It is built from the same pinned sdist as Hoshikage's llama.cpp (build_llama.py's
``SDIST_NAME`` / ``SDIST_SHA256``), with the same ggml ISA options (no AMX: AMX faults on
the VMs this is tested on), into ``$HOSHIKAGE_CACHE_DIR/bench-venv`` — never into the
project's own environment. Building takes 7+ minutes on 2 cores; the result is cached and
stamped with the sdist hash and the CMake options.

    python -m benchmarks.lcpp_env          # build (or reuse) and print the venv's python
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # build_llama.py lives at the repository root
import build_llama  # noqa: E402

STAMP = "hoshikage-bench-stamp.json"


def venv_dir() -> Path:
    return build_llama.cache_dir() / "bench-venv"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def cmake_args() -> list[str]:
    """The ggml options of Hoshikage's build, so both sides run the same kernels."""
    return build_llama.cpu_options() + ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
                                        "-DLLAMA_BUILD_SERVER=OFF"]


def _wanted_stamp(sdist: Path) -> dict:
    return {"sdist_sha256": build_llama.SDIST_SHA256, "sdist": sdist.name, "cmake_args": cmake_args(),
            "python": sys.version.split()[0]}


def _sdist_path() -> Path:
    return build_llama.cache_dir() / "downloads" / build_llama.SDIST_NAME


def find() -> Path | None:
    """The venv's python if it holds the wanted build, else None (nothing is built here)."""
    py, stamp = venv_python(), venv_dir() / STAMP
    try:
        ok = py.is_file() and json.loads(stamp.read_text()) == _wanted_stamp(_sdist_path())
    except (OSError, ValueError):
        ok = False
    return py if ok else None


def ensure(log=print) -> Path:
    """Build the venv if needed (minutes); return its python. Raises RuntimeError on failure."""
    found = find()
    if found:
        return found
    sdist = build_llama.fetch_sdist(build_llama.cache_dir())  # checks the pinned sha256
    where = venv_dir()
    log(f"building llama-cpp-python {build_llama.LLAMA_CPP_PYTHON_VERSION} into {where} "
        "(7+ minutes on 2 cores; cached afterwards)")
    # The interpreter behind the project's venv, not the venv itself.
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    env = {**os.environ, "CMAKE_ARGS": " ".join(cmake_args()),
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    cmd = [str(venv_python()), "-m", "pip", "install", "--quiet", "--no-cache-dir", str(sdist)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"building llama-cpp-python failed ({' '.join(cmd)}):\n{tail}")
    check = subprocess.run([str(venv_python()), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"llama-cpp-python was built but does not import:\n{check.stderr[-2000:]}")
    (where / STAMP).write_text(json.dumps(_wanted_stamp(sdist), indent=1))
    return venv_python()


if __name__ == "__main__":
    print(ensure())
