"""Load a model file once in a child process before the server loads it in its own.

llama.cpp aborts the whole process (``GGML_ASSERT``) on some malformed GGUF files.
``hoshikage.gguf_check`` refuses the cases known to do that, but llama.cpp has more
assertions than any list; a file that kills the child here is refused with
``model_load_failed`` instead of taking the server down. Each file (path, size, mtime,
inode) is probed once per server process; reloading it after an idle unload costs nothing.
``PROBE_MODELS=false`` turns this off. Nothing here imports cffi.

Besides loading, the child tokenizes a short text and renders the model's chat template
once (bounded, see ``hoshikage.chat_template``), so a vocabulary that aborts on the first
tokenization or a template that loops is caught there, under the probe's timeout.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import ModelLoadError

PROBE_TIMEOUT_S = 300.0

# The child loads the model on the CPU with a small context, tokenizes, renders the chat
# template, and reports; exit 0 = usable, exit 3 = the file is refused (the message on stdout),
# exit 4 = something else failed (no usable native library...), death by a signal = llama.cpp
# aborted. A template that merely refuses the probe's
# conversation (raise_exception, or neither engine renders it) is not an error here: requests
# will say so; one that breaks the render's bounds is.
CHILD_CODE = r"""
import sys
from hoshikage import Context, Model
from hoshikage.chat_template import TemplateBoundError
from hoshikage.errors import ModelLoadError
try:
    with Model(sys.argv[1], n_gpu_layers=0) as model:
        Context(model, n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1).close()
        model.tokenize("Hello, world!\n", add_special=True, parse_special=True)
        if model.chat_template is not None:
            try:
                text = model.apply_chat_template([{"role": "user", "content": "Hello"}])
            except TemplateBoundError as exc:
                raise ValueError(f"{model.path}: its chat template cannot be used: {exc}") from None
            except ValueError:
                text = None
            if text:
                model.tokenize(text, add_special=True, parse_special=True)
except (ModelLoadError, ValueError) as exc:  # a verdict on the file
    print(str(exc).replace("\n", " "), flush=True)
    sys.exit(3)
except Exception as exc:  # no usable native library, or another problem of this machine
    print(str(exc).replace("\n", " "), flush=True)
    sys.exit(4)
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
        exc = ModelLoadError(f"loading {path} in a test process took longer than {timeout:.0f}s; "
                             "not loading it into the server")
        exc.about_the_file = False  # not a verdict on the file: it is not remembered as refused
        raise exc from None
    if done.returncode == 0:
        return
    if done.returncode in (3, 4):
        exc = ModelLoadError(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else
                             f"llama.cpp could not load {path}")
        exc.about_the_file = done.returncode == 3  # 4: the machine (e.g. no native library), not the file
        raise exc
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
