"""The app in this process, for cases that check routing, keys, CORS and response shapes only.

``in_process_server`` builds ``create_app`` on its own HOSHIKAGE_HOME and drives it with FastAPI's
TestClient (an httpx client, which the openai SDK takes as its ``http_client``). The worker thread
runs as in ``hoshikage serve``, but its jobs go to ``StubRunner``, which answers at once without
loading a model: no subprocess, no native library. What needs the real process (generation,
loading, signals, sockets, timeouts) stays on the live servers of conftest.py.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from hoshikage.generation.types import Completion
from hoshikage.server import create_app
from hoshikage.server.embed import EmbeddingPlan, embedding_response
from hoshikage.server.settings import Settings

STUB_TEXT = "stub answer"
STUB_WIDTH = 4  # the stub's embedding size
URL = "http://127.0.0.1"  # a name the Host check accepts
LOCAL_CLIENT = ("127.0.0.1", 50000)  # a loopback peer, as a local admin client is


class StubRunner:
    """Answers a job as the worker's runners do (``ready``, then ``done``), without a model."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def run(self, job: Any) -> None:
        self.jobs.append(job)
        plan = job.plan
        if isinstance(plan, EmbeddingPlan):
            n_tokens = sum(len(i) for i in plan.inputs)
            vectors = np.full((len(plan.inputs), STUB_WIDTH), 0.5, dtype=np.float32)
            job.emit("done", embedding_response(plan, vectors, n_tokens, 0.0))
            return
        job.emit("ready", {"kind": "autoregressive", "timeout_s": 1.0, "prompt_tokens": 1})
        if plan.stream:
            job.emit("delta", STUB_TEXT)
        job.emit("done", Completion(text=STUB_TEXT, tokens=[1, 2], prompt_tokens=1, finish_reason="stop",
                                    kind="autoregressive"))


@contextmanager
def in_process_server(home: Path, models: dict[str, Path], **settings: Any) -> Iterator[TestClient]:
    """A TestClient on an app whose registry holds ``models`` (name -> GGUF path); ``settings``
    are Settings fields. ``client.app.state.hoshikage.runner`` is the StubRunner."""
    home.mkdir(parents=True, exist_ok=True)
    entries = {name: {"path": str(path), "stop": []} for name, path in models.items()}
    (home / "model_map.json").write_text(json.dumps(entries))
    app = create_app(Settings(_env_file=None, hoshikage_home=home, ramdisk_path=None, **settings))
    state = app.state.hoshikage
    state.runner = state.embedder = StubRunner()
    with TestClient(app, base_url=URL, client=LOCAL_CLIENT) as client:
        yield client
