"""Load a model file once in a child process before the server loads it in its own.

llama.cpp aborts the whole process (``GGML_ASSERT``) on some malformed GGUF files.
``hoshikage.gguf_check`` refuses the cases known to do that, but llama.cpp has more
assertions than any list; a file that kills the child here is refused with
``model_load_failed`` instead of taking the server down. Each file (path, size, mtime,
inode) is probed once per server process; reloading it after an idle unload costs nothing.
``PROBE_MODELS=false`` turns this off. Nothing here imports cffi.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import ModelLoadError

PROBE_TIMEOUT_S = 300.0

# The child loads the model on the CPU with a small context and reports; exit 0 = loadable,
# exit 3 = an ordinary load error (its message on stdout), death by a signal = llama.cpp aborted.
CHILD_CODE = r"""
import sys
from hoshikage import Context, Model
try:
    with Model(sys.argv[1], n_gpu_layers=0) as model:
        Context(model, n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1).close()
except Exception as exc:  # a load error, or no usable native library: the message says which
    print(str(exc).replace("\n", " "), flush=True)
    sys.exit(3)
"""


def file_signature(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def probe_model(path: Path, *, timeout: float = PROBE_TIMEOUT_S, code: str = CHILD_CODE) -> None:
    """Raise ModelLoadError unless ``path`` loads in a child process without crashing it."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1", "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                              text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"loading {path} in a test process took longer than {timeout:g}s; "
                             "not loading it into the server") from None
    if done.returncode == 0:
        return
    if done.returncode == 3:
        raise ModelLoadError(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else
                             f"llama.cpp could not load {path}")
    if done.returncode < 0:
        try:
            sig = signal.Signals(-done.returncode).name
        except ValueError:
            sig = f"signal {-done.returncode}"
        why = [line.strip() for line in done.stderr.splitlines() if "GGML_ASSERT" in line or "error" in line.lower()]
        raise ModelLoadError(f"llama.cpp crashed ({sig}) loading {path} in a test process, so the server did not "
                             f"load it: the file is malformed" + (f" ({why[-1]})" if why else ""))
    tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    raise ModelLoadError(f"loading {path} in a test process failed: {tail[0]}")
