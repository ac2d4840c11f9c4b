"""One generation at a time: a single worker thread fed by a bounded FIFO queue.

Requests become Jobs. ``submit`` refuses a job (429 server_busy) when ``MAX_QUEUE`` jobs are
already waiting; the request handler withdraws a job that waited past ``QUEUE_TIMEOUT``
(503) or whose client went away. The worker thread runs one job at a time and, between jobs
(at least every ``tick_interval`` seconds), calls ``tick`` for idle unloading — so every call
into llama.cpp happens on this one thread.

A job talks back through its event queue, an ``asyncio.Queue`` fed from the worker thread
with ``loop.call_soon_threadsafe``: ("ready", info), ("progress", (step, total)),
("delta", text), ("done", Completion), ("error", APIError). ``cancel(reason)`` sets a flag
the generation polls before every token or diffusion step.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import APIError

log = logging.getLogger("hoshikage.server")

_ids = itertools.count(1)


class Job:
    """One request's generation. ``plan`` is whatever the runner needs."""

    def __init__(self, plan: Any, loop: asyncio.AbstractEventLoop):
        self.id = next(_ids)
        self.plan = plan
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None  # "disconnect", "timeout", "shutdown"
        self.enqueued_at = time.monotonic()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.progress: tuple[int, int] | None = None

    def emit(self, kind: str, data: Any = None) -> None:
        """Send an event to the request handler (callable from any thread)."""
        if kind == "progress":
            self.progress = data
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()


class Worker:
    def __init__(self, run: Callable[[Job], None], *, max_queue: int, tick: Callable[[], None] | None = None,
                 on_exit: Callable[[], None] | None = None, tick_interval: float = 0.25):
        self._run = run
        self._tick = tick
        self._on_exit = on_exit
        self._tick_interval = tick_interval
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self.running: Job | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="hoshikage-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- called from request handlers --------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue ``job``; return how many jobs are ahead of it. APIError when full or closing."""
        with self._cond:
            if self._closing:
                raise APIError("shutting_down", "the server is shutting down")
            ahead = len(self._waiting) + (self.running is not None)
            if ahead and len(self._waiting) >= self.max_queue:
                raise APIError("server_busy", f"{len(self._waiting)} request(s) already wait for the model "
                               f"(MAX_QUEUE={self.max_queue}); try again later")
            self._waiting.append(job)
            self._cond.notify_all()
            return ahead

    def withdraw(self, job: Job, reason: str, *, cancel_running: bool = True) -> bool:
        """Take ``job`` out of the queue if it is still waiting (True). Otherwise, with
        ``cancel_running``, cancel it wherever it is (False)."""
        with self._cond:
            if job in self._waiting:
                self._waiting.remove(job)
                job.cancel(reason)
                job.finished.set()
                return True
        if cancel_running:
            job.cancel(reason)
        return False

    def status(self) -> dict[str, Any]:
        with self._cond:
            running = self.running
            out: dict[str, Any] = {"waiting": len(self._waiting), "max_queue": self.max_queue,
                                   "running": running is not None}
        if running is not None and running.progress is not None:
            out["progress"] = {"step": running.progress[0], "total": running.progress[1]}
        return out

    def shutdown(self) -> None:
        """Refuse new jobs, fail the waiting ones, cancel the running one (idempotent)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            running = self.running
            self._cond.notify_all()
        for job in waiting:
            job.cancel("shutdown")
            job.emit("error", APIError("shutting_down", "the server is shutting down; the request was not run"))
            job.finished.set()
        if running is not None:
            running.cancel("shutdown")

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the worker thread -------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._waiting and not self._closing:
                        self._cond.wait(self._tick_interval)
                    if self._closing and not self._waiting:
                        break
                    job = self._waiting.popleft() if self._waiting else None
                    self.running = job
                if job is not None:
                    self._run_one(job)
                    with self._cond:
                        self.running = None
                self._safe_tick()
        finally:
            if self._on_exit is not None:
                try:
                    self._on_exit()
                except Exception:  # noqa: BLE001 - the process is exiting; log and go on
                    log.exception("error while releasing the model at shutdown")

    def _run_one(self, job: Job) -> None:
        job.started.set()
        try:
            if not job.cancelled.is_set():
                self._run(job)
        except APIError as exc:
            job.emit("error", exc)
        except Exception as exc:  # noqa: BLE001 - a bug or a native failure must not kill the worker
            log.exception("job %d failed", job.id)
            job.emit("error", APIError("inference_failed", f"generation failed: {exc}"))
        finally:
            job.finished.set()

    def _safe_tick(self) -> None:
        if self._tick is None:
            return
        try:
            self._tick()
        except Exception:  # noqa: BLE001
            log.exception("residency tick failed")
