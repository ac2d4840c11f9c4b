"""Logging: stdout, or LOG_FILE_PATH rotated daily to ``LOG_FILE_PATH.YYYY-MM-DD`` (FT-008).

Each generation writes one line on ``hoshikage.server.requests``::

    model=smollm2 kind=autoregressive prompt_tokens=31 completion_tokens=16 steps=0 time=0.21s tokens/s=94.0 finish=length

A record is one line: control and other non-printable characters in a message (a model name, a
path, a line of llama.cpp's log) are escaped, so no input can forge a log line or send terminal
escapes; tracebacks keep their lines.
"""
from __future__ import annotations

import logging
import sys
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

from .text_rules import shown

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "hoshikage-server"


class OneLineFormatter(logging.Formatter):
    """Escapes non-printable characters in the message (not in the traceback that may follow)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = shown(record.message)
        return super().formatMessage(record)


def setup_logging(log_file_path: Path | None, level: str = "INFO") -> logging.Handler:
    """Route hoshikage's and uvicorn's loggers to one handler; return it. Safe to call again."""
    handler: logging.Handler | None = None
    problem = None
    if log_file_path is not None:
        try:
            log_file_path.parent.mkdir(parents=True, exist_ok=True)
            handler = TimedRotatingFileHandler(log_file_path, when="midnight", encoding="utf-8")
            handler.suffix = "%Y-%m-%d"
        except OSError as exc:  # the server still runs; it says where its log went instead
            problem = f"cannot write the log file LOG_FILE_PATH={log_file_path} ({exc.strerror or exc}); logging to stdout"
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(OneLineFormatter(FORMAT))
    for name in ("hoshikage", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
    # llama.cpp's own log (model loading, context creation) is verbose at INFO.
    llama_level = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    logging.getLogger("hoshikage.llama").setLevel(llama_level)
    if problem:
        logging.getLogger("hoshikage.server").warning(problem)
    return handler
