"""Run the server: uvicorn with a clean stop on SIGTERM / SIGINT.

On the first signal the running generation is cancelled (it stops within one token or
diffusion step), waiting clients get a 503 ``shutting_down`` error, uvicorn drains the
connections, and the worker frees the model and deletes the RAM-disk copy. Registry writes
are atomic, so nothing on disk is left half-written.
"""
from __future__ import annotations

import logging
from types import FrameType

import uvicorn

from .app import create_app
from .logs import setup_logging
from .settings import Settings

log = logging.getLogger("hoshikage.server")

GRACEFUL_S = 10  # seconds uvicorn waits for open responses after a signal
# Idle keep-alive connections are kept longer than HTTP clients keep them in their pools (httpx
# and so the openai SDK: 5 s, uvicorn's own default too): when the server closes first, a client
# may send its next request on the closing connection and get a connection error (seen under load).
KEEP_ALIVE_S = 75


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit):
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            log.info("signal %d: stopping (running generation cancelled, waiting requests refused)", sig)
            self._on_exit()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    setup_logging(settings.log_file_path, settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=GRACEFUL_S, timeout_keep_alive=KEEP_ALIVE_S, lifespan="on")
    server = _Server(config, app.state.hoshikage.shutdown_soon)
    server.run()
