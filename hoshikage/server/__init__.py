"""Hoshikage's OpenAI-compatible HTTP server (FastAPI + uvicorn). See docs/server.md.

    from hoshikage.server import create_app, load_settings, serve
    serve(load_settings(port=3030))

Layers, one job per file: settings (environment) -> registry (model_map.json) ->
residency (what is loaded; "quiet intelligence": resources only while needed, see
residency.py) -> worker (one generation at a time) ->
execute (request -> generate()) -> app (routes). Nothing here imports cffi.
"""
from __future__ import annotations

from .app import create_app
from .serve import serve
from .settings import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings", "serve"]
