"""Run the server: uvicorn with a clean stop on SIGTERM / SIGINT, and bounded connections.

On the first signal the running generation is cancelled (it stops within one token or
diffusion step), waiting clients get a 503 ``shutting_down`` error, uvicorn drains the
connections, and the worker frees the model and deletes the RAM-disk copy. Registry writes
are atomic, so nothing on disk is left half-written.

Connections are bounded in time and number (slowloris): a request must arrive whole within
``READ_TIMEOUT`` seconds, an idle keep-alive connection lasts ``KEEP_ALIVE_S``, and past
``MAX_CONNECTIONS`` open connections a new one closes the connection idle longest (no request in
progress); when every connection has a request in progress, the new one is answered 429.
Forwarding headers are believed only from ``TRUSTED_PROXIES``.
"""
from __future__ import annotations

import asyncio
import json
import logging
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import create_app
from .errors import APIError
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


def _raw_response(error: APIError) -> bytes:
    """An error as bytes written straight to the socket (outside h11, which may be mid-request)."""
    body = json.dumps(error.body()).encode()
    return (f"HTTP/1.1 {error.status} {error.code.replace('_', ' ').title()}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode() + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request and a connection limit.

    The read deadline starts when the connection opens, or when the first byte of a later request
    arrives, and ends when the request's body is complete. (Between requests the keep-alive timeout
    applies.) ``read_timeout`` and ``max_connections`` are set by ``bounded_protocol``.
    """

    read_timeout: float = 20.0
    max_connections: int = 200

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_timer: asyncio.TimerHandle | None = None
        self._idle_since = self.loop.time()
        self._arm_read_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Close the connection idle longest; with none idle, answer this one's request 429."""
        idle = [c for c in self.connections if c is not self and isinstance(c, BoundedH11Protocol)
                and c._between_requests() and not c.transport.is_closing()]
        if idle:
            oldest = min(idle, key=lambda c: c._idle_since)
            log.debug("MAX_CONNECTIONS=%d: closing the connection from %s, idle longest", self.max_connections,
                      oldest.client)
            oldest.transport.close()
            return
        log.warning("%d open connections, all busy: answering 429 (MAX_CONNECTIONS=%d)", len(self.connections),
                    self.max_connections)
        self.app = _too_many_connections(self.max_connections)

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and self._between_requests():
            self._arm_read_timer()
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete and not self.cycle.more_body:
            self._disarm_read_timer()  # the whole request is in

    def on_response_complete(self) -> None:
        self._disarm_read_timer()
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_read_timer(self) -> None:
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if getattr(self, "_read_timer", None) is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._between_requests() or not self.cycle.response_started:
            self.transport.write(_raw_response(APIError(
                "request_timeout", f"the request did not arrive whole within READ_TIMEOUT={self.read_timeout:g} "
                "seconds; the connection is closed")))
        log.info("closing a connection from %s: no whole request within %gs", self.client, self.read_timeout)
        self.transport.close()


def _too_many_connections(limit: int) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        error = APIError("server_busy", f"the server has {limit} open connections, each with a request in "
                         f"progress (MAX_CONNECTIONS={limit}); try again later")
        response = error.response()
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
    return app


def bounded_protocol(settings: Settings) -> type[BoundedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with this server's limits."""
    return type("HoshikageH11Protocol", (BoundedH11Protocol,),
                {"read_timeout": settings.read_timeout, "max_connections": settings.max_connections})


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    proxies = settings.trusted_proxies
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                          timeout_graceful_shutdown=GRACEFUL_S, timeout_keep_alive=KEEP_ALIVE_S, lifespan="on",
                          http=bounded_protocol(settings), proxy_headers=bool(proxies),
                          forwarded_allow_ips=proxies or None)


def host_warning(settings: Settings) -> str | None:
    """What to say at start when other machines may connect but no name lets them in."""
    if settings.host in ("0.0.0.0", "::", "") and not settings.allowed_hosts:
        return (f"HOST={settings.host}: clients on other machines must reach the server under a name (or "
                "address) listed in ALLOWED_HOSTS; others get 400 host_not_allowed")
    return None


def serve(settings: Settings) -> None:
    setup_logging(settings.log_file_path, settings.log_level)
    app = create_app(settings)
    if warning := host_warning(settings):
        log.warning("%s", warning)
    server = _Server(uvicorn_config(settings, app), app.state.hoshikage.shutdown_soon)
    server.run()
