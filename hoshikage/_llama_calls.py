"""Helpers for calls into llama.cpp that Model makes: a load deadline, the error lines of a failed
call, and C-string getters."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from . import _ffi


def _load_deadline(timeout: float | None) -> Any:
    """A llama_progress_callback that stops the load once ``timeout`` seconds have passed."""
    if timeout is None:
        return None
    if timeout <= 0:
        raise ValueError(f"load_timeout must be > 0 seconds, got {timeout!r}")
    deadline = time.monotonic() + timeout

    @_ffi.ffi.callback("bool(float, void *)")
    def progress(fraction: float, user_data: Any) -> bool:
        return time.monotonic() < deadline

    return progress


class _LlamaErrors(logging.Handler):
    """Collects llama.cpp's error lines (routed to the ``hoshikage.llama`` logger) during a call
    on this thread, so a failed load can say why."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread and len(self.lines) < 20:
            self.lines.append(record.getMessage().strip())

    def __enter__(self) -> _LlamaErrors:
        logging.getLogger("hoshikage.llama").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("hoshikage.llama").removeHandler(self)

    def reason(self) -> str | None:
        """The first specific lines (function-name prefixes and the generic "failed to load" dropped)."""
        out: list[str] = []
        for line in self.lines:
            text = line.split("error loading model:", 1)[-1].strip()
            head, sep, rest = text.partition(": ")
            if sep and " " not in head:  # "gguf_init_from_reader: ..." -> "..."
                text = rest.strip()
            if text and "failed to load model" not in text and text not in out:
                out.append(text)
        return "; ".join(out[:2]) or None


def _read_c_string(call: Any, size: int = 256) -> str | None:
    """Call a llama.h ``(buf, buf_size) -> int`` getter, growing the buffer until it fits."""
    while True:
        buf = _ffi.ffi.new("char[]", size)
        n = call(buf, size)
        if n < 0:
            return None
        if n < size:
            return _ffi.ffi.string(buf).decode("utf-8", "replace")
        size = n + 1
