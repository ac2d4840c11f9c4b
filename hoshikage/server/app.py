"""The FastAPI application: routes, authentication, and the path from a request to the worker.

A generation request is planned (defaults merged), queued as a Job, and answered once the
worker reports back: errors found before generation starts (unknown model, load failure,
bad parameters, memory budget, queue full or too long a wait) get their own HTTP status,
even for ``stream=true``, because the response starts only when the job is ready.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ModelLoadError
from . import errors
from .access import Access, HostCheck
from .cors import CORS
from .embed import EmbeddingPlan, EmbeddingRunner, make_embedding_plan
from .errors import APIError
from .execute import Plan, Runner, make_plan
from .openai_format import SSE_DONE, Formatter, extension, finish, sse, sse_comment
from .registry import ModelEntry, Registry, RegistryError, check_model_path
from .residency import Residency
from .schemas import AddModelRequest, ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from .settings import Settings
from .worker import Job, Worker

log = logging.getLogger("hoshikage.server")

POLL_S = 0.25  # how often a waiting handler checks its client and the queue deadline
KEEPALIVE_S = 10.0  # an SSE comment after this long without events
STATUS_PATH_FIELDS = ("loaded_from", "ramdisk_copies")  # /v1/status shows them to admin callers only


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

    # -- authentication (rules in access.py) ---------------------------------------------------

    access = Access(settings)
    guarded = [Depends(access.require_key)]
    admin = [Depends(access.require_admin)]

    # -- documentation (guarded like every endpoint but /v1/status) ------------------------------

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Hoshikage API")

    # -- information -----------------------------------------------------------------------------

    @app.get("/v1/status")
    async def status(request: Request) -> dict[str, Any]:
        """Liveness and resources: loaded model, its kind, memory, queue, uptime (no API key needed;
        file paths only for a caller the admin endpoints accept)."""
        resident = state.residency.status()
        if not access.is_admin(request):
            for key in STATUS_PATH_FIELDS:
                resident.pop(key, None)
        return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - state.started_at, 1),
                **resident, "queue": state.worker.status(),
                "requests": dict(state.counters),
                "settings": {"idle_timeout": settings.idle_timeout, "great_timeout": settings.great_timeout,
                             "request_timeout": settings.request_timeout,
                             "queue_timeout": settings.queue_timeout,
                             "diffusion_memory_budget_mb": settings.diffusion_memory_budget_mb}}

    @app.get("/v1/api/version", dependencies=guarded)
    async def version() -> dict[str, str]:
        return {"version": __version__}

    @app.get("/v1/models", dependencies=guarded)
    async def list_models() -> dict[str, Any]:
        entries = state.registry.entries()
        cards = await asyncio.to_thread(lambda: [_model_card(e, state) for e in entries.values()])
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{name:path}", dependencies=guarded)
    async def get_model(name: str) -> dict[str, Any]:
        entry = state.registry.get(name)
        if entry is None:
            raise _not_found(name, state)
        return await asyncio.to_thread(_model_card, entry, state)

    # -- generation ------------------------------------------------------------------------------

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """Chat; the model's kind (autoregressive or diffusion) decides how the answer is made."""
        return await _generate(state, body, request)

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request):
        """Raw-text completion (no chat template)."""
        return await _generate(state, body, request)

    @app.post("/v1/embeddings", dependencies=guarded)
    async def embeddings(body: EmbeddingRequest, request: Request):
        """Embeddings (OpenAI's shape) of an autoregressive model, pooled and L2-normalised."""
        return await _embed(state, body, request)

    # -- admin -----------------------------------------------------------------------------------

    @app.post("/admin/models", dependencies=admin)
    async def add_model(body: AddModelRequest) -> dict[str, Any]:
        # The allow-list first, nothing opened before it, and off the event loop (registry.check_model_path).
        try:
            path = await asyncio.to_thread(check_model_path, body.path, settings.allowed_model_dirs())
        except ModelLoadError as exc:
            raise APIError("validation_error", str(exc), param="path", status=400) from exc
        entry = ModelEntry(name=body.name, path=path, stop=tuple(body.stop), description=body.description,
                           test_model=body.test_model,
                           diffusion=body.diffusion.model_dump(exclude_none=True) if body.diffusion else {})
        try:
            replaced = await asyncio.to_thread(state.registry.add, entry)
        except (RegistryError, OSError) as exc:
            raise APIError("inference_failed", f"could not write the registry: {exc}", status=500) from exc
        return {"status": "ok", "name": body.name, "replaced": replaced, "model": entry.to_json()}

    @app.delete("/admin/models/{name:path}", dependencies=admin)
    async def remove_model(name: str) -> dict[str, Any]:
        entry = state.registry.get(name)
        if entry is not None and entry.source == "models_dir":
            raise APIError("validation_error", f"{name!r} is discovered from {state.registry.models_dir}; "
                           "delete or move the file to remove it", param="name", status=400)
        try:
            removed = await asyncio.to_thread(state.registry.remove, name)
        except (RegistryError, OSError) as exc:
            raise APIError("inference_failed", f"could not write the registry: {exc}", status=500) from exc
        if not removed:
            raise _not_found(name, state)
        return {"status": "ok", "name": name, "removed": True}

    @app.post("/admin/reload", dependencies=admin)
    async def reload() -> dict[str, Any]:
        entries = await asyncio.to_thread(state.registry.reload)
        return {"status": "ok", "models": sorted(entries)}

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


def _not_found(name: str, state: ServerState) -> APIError:
    names = ", ".join(sorted(state.registry.entries())) or "none (see hoshikage add)"
    return APIError("model_not_found", f"model {name!r} is not registered; available: {names}", param="model")


def _model_card(entry: ModelEntry, state: ServerState) -> dict[str, Any]:
    try:
        created = int(Path(entry.path).stat().st_mtime)
    except OSError:
        created = 0
    loaded = state.residency.entry is not None and state.residency.entry.name == entry.name
    card = {"id": entry.name, "object": "model", "created": created, "owned_by": "hoshikage",
            "kind": entry.kind_hint(), "loaded": loaded, "test_model": entry.test_model,
            "path": str(entry.path), "source": entry.source}
    if entry.description:
        card["description"] = entry.description
    return card


# -- the request side of a generation ------------------------------------------------------------

async def _generate(state: ServerState, body: ChatCompletionRequest | CompletionRequest, request: Request):
    entry = state.registry.get(body.model)
    if entry is None:
        raise _not_found(body.model, state)
    plan = make_plan(body, entry, state.settings)
    job = Job(plan, asyncio.get_running_loop())
    state.worker.submit(job)  # APIError server_busy / shutting_down
    try:
        kind, data = await _first_event(state, job, request)
    except BaseException:
        state.worker.withdraw(job, "disconnect")
        raise
    if kind == "error":
        raise data
    if kind is None:  # the client went away while waiting
        return JSONResponse({}, status_code=499)
    fmt = Formatter(plan.endpoint, entry.name)
    if plan.stream:
        return StreamingResponse(_stream(state, job, fmt, plan), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _collect(state, job, fmt, plan, request)


async def _embed(state: ServerState, body: EmbeddingRequest, request: Request):
    entry = state.registry.get(body.model)
    if entry is None:
        raise _not_found(body.model, state)
    job = Job(make_embedding_plan(body, entry, state.settings), asyncio.get_running_loop())
    state.worker.submit(job)  # APIError server_busy / shutting_down
    try:
        kind, data = await _first_event(state, job, request)  # the job emits only "done" or "error"
    except BaseException:
        state.worker.withdraw(job, "disconnect")
        raise
    if kind == "error":
        raise data
    if kind is None:  # the client went away
        return JSONResponse({}, status_code=499)
    return JSONResponse(data)


async def _first_event(state: ServerState, job: Job, request: Request) -> tuple[str | None, Any]:
    """Wait for the job to become ready (or fail), enforcing QUEUE_TIMEOUT and watching the client."""
    queue_deadline = time.monotonic() + state.settings.queue_timeout
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            pass
        if await request.is_disconnected():
            state.worker.withdraw(job, "disconnect")
            return None, None
        if not job.started.is_set() and time.monotonic() > queue_deadline:
            if state.worker.withdraw(job, "queue_timeout", cancel_running=False):
                raise APIError("queue_timeout", f"the request waited {state.settings.queue_timeout:g}s for its "
                               "turn (QUEUE_TIMEOUT) behind other generations; try again later")


async def _collect(state: ServerState, job: Job, fmt: Formatter, plan: Plan, request: Request):
    """Wait for the result, checking every POLL_S that the client is still there (events such as
    diffusion progress may arrive much more often than that)."""
    next_check = time.monotonic() + POLL_S
    while True:
        try:
            kind, data = await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            kind, data = None, None
        if kind == "error":
            raise data
        if kind == "done":
            return JSONResponse(fmt.response(data, _extra(plan)))
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + POLL_S
            if await request.is_disconnected():
                job.cancel("disconnect")
                return JSONResponse({}, status_code=499)


def _extra(plan: Plan) -> dict[str, Any]:
    out = {"model_entry": plan.entry.name}
    if plan.entry.test_model:
        out["test_model"] = True
    for key in ("memory_estimate_mb", "timeout_s"):
        if key in plan.info:
            out[key] = plan.info[key]
    return out


async def _stream(state: ServerState, job: Job, fmt: Formatter, plan: Plan) -> AsyncIterator[str]:
    """SSE: AR token deltas; diffusion progress comments, then one content chunk; then [DONE]."""
    sent = ""
    lp_sent = 0  # log probabilities already streamed
    role_sent = False
    finished = False
    try:
        while True:
            try:
                kind, data = await asyncio.wait_for(job.events.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield sse_comment("keepalive")
                continue
            if kind == "progress":
                yield sse_comment(f"diffusion step {data[0]}/{data[1]}")
            elif kind == "delta":
                yield sse(fmt.chunk(data, role=not role_sent))
                role_sent, sent = True, sent + data
            elif kind == "delta_logprobs":  # text with its tokens' log probabilities
                text, lps = data
                yield sse(fmt.chunk(text, role=not role_sent, logprobs=lps))
                role_sent, sent, lp_sent = True, sent + text, lp_sent + len(lps)
            elif kind == "tool_delta":  # pieces of tool calls (OpenAI's delta.tool_calls)
                yield sse(fmt.chunk(None, role=not role_sent, tool_calls=data))
                role_sent = True
            elif kind == "error":
                finished = True
                yield sse(data.body())
                yield SSE_DONE
                return
            elif kind == "done":
                finished = True
                text = data.text
                rest = text[len(sent):] if text.startswith(sent) else ""
                if not text.startswith(sent):
                    log.warning("streamed text is not a prefix of the final answer (job %d)", job.id)
                # Diffusion pseudo-streaming: the whole answer is this one chunk.
                rest_lps = data.logprobs[lp_sent:] if data.logprobs is not None else None
                yield sse(fmt.chunk(rest, role=not role_sent, finish_reason=finish(data), logprobs=rest_lps,
                                    extra=extension(data, _extra(plan))))
                if plan.include_usage:
                    yield sse(fmt.usage_chunk(data))
                yield SSE_DONE
                return
    finally:
        if not finished:  # the client disconnected (or the server is stopping): stop the work
            state.worker.withdraw(job, "disconnect")

