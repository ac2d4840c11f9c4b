"""The routes: documentation, information, generation, admin. Each ``add_*`` registers one group
on the app; who may call what is access.py's (``guarded``: an API key; ``admin``: an admin
client). Generation and embeddings hand over to respond.py, which queues the job and answers.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from .. import __version__
from ..errors import ModelLoadError
from . import respond
from .access import Access
from .embed import EmbeddingRequest
from .device_status import device_report
from .errors import APIError
from .registry import ModelEntry, RegistryError, check_model_path
from .schemas import AddModelRequest, ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    from .app import ServerState

STATUS_PATH_FIELDS = ("loaded_from", "ramdisk_copies")  # /v1/status shows them to admin callers only


def add_docs_routes(app: FastAPI, guarded: list) -> None:
    """/openapi.json and /docs, guarded like every endpoint but /v1/status."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guarded)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Hoshikage API")


def add_info_routes(app: FastAPI, state: ServerState, access: Access, guarded: list) -> None:
    """/v1/status, /v1/api/version, /v1/models, /v1/models/{name}."""
    settings = state.settings

    @app.get("/v1/status")
    async def status(request: Request) -> dict[str, Any]:
        """Liveness and resources: loaded model, its kind, memory, queue, uptime (no API key needed;
        file paths only for a caller the admin endpoints accept)."""
        resident = state.residency.status()
        if not access.is_admin(request):
            for key in STATUS_PATH_FIELDS:
                resident.pop(key, None)
        return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - state.started_at, 1),
                **resident, **device_report(state), "queue": state.worker.status(),
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
            raise respond.not_found(name, state)
        return await asyncio.to_thread(_model_card, entry, state)


def add_generation_routes(app: FastAPI, state: ServerState, guarded: list) -> None:
    """/v1/chat/completions, /v1/completions, /v1/embeddings."""

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        """Chat; the model's kind (autoregressive or diffusion) decides how the answer is made."""
        return await respond.generate(state, body, request)

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request):
        """Raw-text completion (no chat template)."""
        return await respond.generate(state, body, request)

    @app.post("/v1/embeddings", dependencies=guarded)
    async def embeddings(body: EmbeddingRequest, request: Request):
        """Embeddings (OpenAI's shape) of an autoregressive model, pooled and L2-normalised."""
        return await respond.embed(state, body, request)


def add_admin_routes(app: FastAPI, state: ServerState, admin: list) -> None:
    """POST /admin/models, DELETE /admin/models/{name}, POST /admin/reload."""

    @app.post("/admin/models", dependencies=admin)
    async def add_model(body: AddModelRequest) -> dict[str, Any]:
        # The allow-list first, nothing opened before it, and off the event loop (registry.check_model_path).
        try:
            path = await asyncio.to_thread(check_model_path, body.path, state.settings.allowed_model_dirs())
        except ModelLoadError as exc:
            raise APIError("validation_error", str(exc), param="path", status=400) from exc
        entry = ModelEntry(name=body.name, path=path, stop=tuple(body.stop), description=body.description,
                           test_model=body.test_model,
                           diffusion=body.diffusion.model_dump(exclude_none=True) if body.diffusion else {})
        replaced = await _write_registry(state.registry.add, entry)
        return {"status": "ok", "name": body.name, "replaced": replaced, "model": entry.to_json()}

    @app.delete("/admin/models/{name:path}", dependencies=admin)
    async def remove_model(name: str) -> dict[str, Any]:
        entry = state.registry.get(name)
        if entry is not None and entry.source == "models_dir":
            raise APIError("validation_error", f"{name!r} is discovered from {state.registry.models_dir}; "
                           "delete or move the file to remove it", param="name", status=400)
        if not await _write_registry(state.registry.remove, name):
            raise respond.not_found(name, state)
        return {"status": "ok", "name": name, "removed": True}

    @app.post("/admin/reload", dependencies=admin)
    async def reload() -> dict[str, Any]:
        entries = await asyncio.to_thread(state.registry.reload)
        return {"status": "ok", "models": sorted(entries)}


async def _write_registry(change: Any, arg: Any) -> Any:
    """``change(arg)`` off the event loop; a registry that cannot be written is a 500."""
    try:
        return await asyncio.to_thread(change, arg)
    except (RegistryError, OSError) as exc:
        raise APIError("inference_failed", f"could not write the registry: {exc}", status=500) from exc


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
