"""The frame every job on the worker thread shares (generation and embeddings).

``JobRunner.run`` loads the model on demand, calls the subclass's ``execute``, turns any failure
into an APIError (a bug or a native failure fails that request only, the server goes on), counts
the outcome for ``/v1/status``, writes the one-line request log, and emits ``("done", result)``.
A model on RPC servers is run the same way in a child process instead (isolated.py): one model
is in memory at a time, here or there.
"""
from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from .._ffi._loader import BUILD_COMMAND, LibraryNotFound
from ..errors import ModelLoadError
from .errors import APIError
from .isolated import IsolatedModels
from .placement import rpc_servers
from .registry import ModelEntry
from .residency import Residency
from .settings import Settings
from .worker import Job

log = logging.getLogger("hoshikage.server")
request_log = logging.getLogger("hoshikage.server.requests")

# APIError code -> the /v1/status counter it adds to (anything else: "failed")
_OUTCOMES = {"processing_timeout": "timed_out", "shutting_down": "cancelled"}
_isolated: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Residency -> its child for RPC models


def load_model(residency: Residency, entry: ModelEntry) -> Any:
    """The model for ``entry``, loaded on demand (residency.acquire); load failures as APIError."""
    try:
        return residency.acquire(entry)
    except ModelLoadError as exc:
        raise APIError("model_load_failed", str(exc), param="model") from exc
    except (ValueError, LibraryNotFound) as exc:
        raise APIError("model_load_failed", f"{entry.name}: {exc}", param="model") from exc
    except OSError as exc:  # libllama itself could not be opened (a broken build)
        raise APIError("model_load_failed", f"{entry.name}: the native library could not be "
                       f"opened ({exc}); rebuild it with: {BUILD_COMMAND}", param="model") from exc


def deadline_stop(job: Job, timeout: float) -> Callable[[], bool]:
    """A ``should_stop`` for the library: true once the job is cancelled or ``timeout`` seconds
    have passed (then the job is cancelled with reason "timeout")."""
    deadline = time.monotonic() + timeout

    def should_stop() -> bool:
        if job.cancelled.is_set():
            return True
        if time.monotonic() > deadline:
            job.cancel("timeout")
            return True
        return False

    return should_stop


class JobRunner:
    """Subclasses give ``execute`` (the work: a result, or None if the client went away),
    ``summary`` (the log line's fields) and optionally ``kind_of`` and ``response``."""

    what = "the job"  # for "<what> failed: ..." messages

    def __init__(self, settings: Settings, residency: Residency, counters: dict[str, int], *,
                 isolate: bool = True):
        self.settings = settings
        self.residency = residency
        self.counters = counters
        # one child for every runner on this residency (isolate False: this is the child; no
        # residency: a runner that only plans requests, as in tests, never runs a model)
        self.isolated = None
        if isolate and residency is not None:
            if residency not in _isolated:
                _isolated[residency] = IsolatedModels(settings, counters)
            self.isolated = _isolated[residency]

    def execute(self, job: Job, model: Any, kind: str) -> Any:
        raise NotImplementedError

    def summary(self, result: Any, elapsed: float) -> str:
        raise NotImplementedError

    def kind_of(self, model: Any) -> str:
        return "diffusion" if model.is_diffusion else "autoregressive"

    def response(self, job: Job, result: Any, elapsed: float) -> Any:
        return result

    def run(self, job: Job) -> None:
        if self.isolated is not None:
            if rpc_servers(job.plan.entry, self.settings):
                self.residency.unload(f"switching to {job.plan.entry.name} (on RPC servers)")
                return self.isolated.run(job)
            self.isolated.stop()
        name, t0, kind = job.plan.entry.name, time.perf_counter(), "?"
        try:
            model = load_model(self.residency, job.plan.entry)
            kind = self.kind_of(model)
            try:
                result = self.execute(job, model, kind)
            except APIError:
                raise
            except Exception as exc:  # a bug or a native failure: this request fails, the server goes on
                log.exception("job %d (%s) failed", job.id, name)
                raise APIError("inference_failed", f"{self.what} failed: {type(exc).__name__}: {exc}") from exc
        except APIError as exc:
            self._count(_OUTCOMES.get(exc.code, "failed"))
            request_log.info("model=%s kind=%s error=%s time=%.2fs", name, kind, exc.code, time.perf_counter() - t0)
            raise
        finally:
            self.residency.touch()
        if result is None:  # cancelled because the client went away
            self._count("cancelled")
            request_log.info("model=%s kind=%s cancelled=%s time=%.2fs", name, kind, job.cancel_reason,
                             time.perf_counter() - t0)
            return
        self._count("completed")
        elapsed = time.perf_counter() - t0
        request_log.info("model=%s kind=%s %s", name, kind, self.summary(result, elapsed))
        job.emit("done", self.response(job, result, elapsed))

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
