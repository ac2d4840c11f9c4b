"""The FastAPI application: the state its routes share, middleware, error handlers, lifespan.

The routes are routes.py's; a generation request goes from there to respond.py (queue the job,
wait, answer) and, on the worker thread, to execute.py (the request -> ``hoshikage.generate()``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from . import errors
from .access import Access, HostCheck
from .cors import CORS
from .embed import EmbeddingPlan, EmbeddingRunner
from .errors import APIError
from .execute import Runner
from .registry import Registry
from .residency import Residency
from .routes import add_admin_routes, add_docs_routes, add_generation_routes, add_info_routes
from .settings import Settings
from .worker import Job, Worker

log = logging.getLogger("hoshikage.server")


class ServerState:
    """Everything the routes share; built by create_app, started by the lifespan."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry(settings.hoshikage_home)
        self.residency = Residency(settings)
        self.counters: dict[str, int] = {}
        self.runner = Runner(settings, self.residency, self.counters)
        self.embedder = EmbeddingRunner(settings, self.residency, self.counters)
        self.worker = Worker(self.run_job, max_queue=settings.max_queue,
                             tick=lambda: self.residency.tick(self.registry), on_exit=self.residency.shutdown)
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None

    def run_job(self, job: Job) -> None:
        """On the worker thread: an embeddings job or a generation."""
        (self.embedder if isinstance(job.plan, EmbeddingPlan) else self.runner).run(job)

    def shutdown_soon(self) -> None:
        """Callable from a signal handler: cancel the running job and fail the waiting ones."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.worker.shutdown)
        else:
            self.worker.shutdown()


def create_app(settings: Settings) -> FastAPI:
    """The application for ``settings``; its lifespan starts and stops the worker thread."""
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        state.worker.start()
        log.info("Hoshikage %s serving %d model(s) from %s", __version__, len(state.registry.entries()),
                 state.registry.path)
        try:
            yield
        finally:
            state.worker.shutdown()
            await asyncio.to_thread(state.worker.join, 30)

    app = FastAPI(title="Hoshikage", version=__version__, lifespan=lifespan, docs_url=None, openapi_url=None,
                  description="OpenAI-compatible server for autoregressive and diffusion GGUF models.")
    app.state.hoshikage = state
    app.add_exception_handler(RequestValidationError, errors.validation_handler)
    app.add_exception_handler(APIError, errors.api_error_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(Exception, errors.unexpected_error_handler)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(CORS, origins=settings.cors_origins)  # inside the Host check (cors.py)
    app.add_middleware(HostCheck, allowed=settings.served_hosts())  # outermost: runs first
    access = Access(settings)  # authentication: the rules are in access.py
    guarded, admin = [Depends(access.require_key)], [Depends(access.require_admin)]
    add_docs_routes(app, guarded)
    add_info_routes(app, state, access, guarded)
    add_generation_routes(app, state, guarded)
    add_admin_routes(app, state, admin)
    return app


class BodyLimit:
    """ASGI middleware: request bodies above ``limit`` bytes get 413 request_too_large, whether
    they declare a Content-Length or arrive chunked (counted as they are read)."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = f"the request body is larger than MAX_REQUEST_BYTES={self.limit} bytes"
        try:
            if declared is not None and int(declared) > self.limit:
                response = APIError("request_too_large", too_large, param="body").response()
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        except ValueError:
            pass
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send)
