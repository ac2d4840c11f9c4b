"""Models on RPC servers run in a child process of the server, so that a lost server ends the
child, never the server.

llama.cpp's RPC client aborts its process (``GGML_ABORT``, which Python cannot catch) when a
server it uses goes away in the middle of a call (ggml-rpc.cpp: ``RPC_STATUS_ASSERT`` in the
dispatcher), and any later call over that connection, freeing the model included, aborts too.
So a model whose entry or RPC_SERVERS names RPC servers is loaded and run in one child process
(multiprocessing, spawn) that runs the very same job runners on its own Residency; the worker
thread sends it each job's plan and relays its events back. When the child dies, that request
fails with ``inference_failed`` naming the servers and llama.cpp's last words; the next request
starts a fresh child, which loads the model again (``model_load_failed`` naming the endpoint
while it is still unreachable). A child whose server closed its connection between two calls
(checked before every decode) reports that error and exits the same way.

After IDLE_TIMEOUT without requests the child unloads its model and ends, its memory with it; the
next request starts another. The parent never calls llama.cpp for such a model; /v1/status shows
what the child reported after its last request.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .errors import APIError
from .settings import Settings

log = logging.getLogger("hoshikage.server")

POLL_S = 0.1  # how often the relay looks at the job's cancellation while the child works
STOP_WAIT_S = 10.0
CANCEL_GRACE_S = 30.0  # a cancelled job's child that is still silent after this long is killed


class _EndedQuietly(Exception):
    """The child ended by itself (exit status 0) before it answered the job."""


class ChildJob:
    """The child's stand-in for worker.Job: what the runners use (plan, cancellation, emit)."""

    def __init__(self, plan: Any, conn: Any):
        self.id, self.plan, self._conn = 0, plan, conn
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None
        self.progress: tuple[int, int] | None = None

    def emit(self, kind: str, data: Any = None) -> None:
        self._conn.send((kind, data))

    def cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()


def _error_state(exc: APIError) -> tuple:
    return (exc.code, exc.message, exc.param, exc.status)


def child_main(conn: Any, settings: Settings, log_path: str) -> None:
    """The child: run each job it is sent with the server's own runners; exit on "stop" or EOF."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)  # llama.cpp's abort message lands here, for the parent to quote
    os.environ["GGML_NO_BACKTRACE"] = "1"
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    from .embed import EmbeddingRunner
    from .execute import Runner
    from .residency import Residency

    own = settings.model_copy(update={"probe_models": False, "ramdisk_path": None})
    residency, counters = Residency(own), {}
    runners = (Runner(own, residency, counters, isolate=False), EmbeddingRunner(own, residency, counters, isolate=False))
    inbox: queue.Queue = queue.Queue()
    current: list[ChildJob] = []

    def read() -> None:
        try:
            while True:
                kind, data = conn.recv()
                if kind == "cancel" and current:
                    current[0].cancel(data)
                elif kind in ("job", "stop"):
                    inbox.put(data if kind == "job" else None)
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            try:
                plan = inbox.get(timeout=0.25)
            except queue.Empty:
                residency.tick()
                if residency.loads and residency.model is None:
                    break  # unloaded after IDLE_TIMEOUT: the process ends, and its memory with it
                continue
            if plan is None or _run_one(plan, conn, runners, counters, residency, current):
                break
    finally:
        residency.shutdown()


def _run_one(plan: Any, conn: Any, runners: tuple, counters: dict[str, int], residency: Any,
             current: list[ChildJob]) -> bool:
    """Run one plan, sending its events, then the status and its outcome; True when an RPC
    server was lost (its model can then neither be freed nor used again here: the child ends)."""
    from .embed import EmbeddingPlan

    job = ChildJob(plan, conn)
    current[:] = [job]
    before = dict(counters)
    try:
        runners[isinstance(plan, EmbeddingPlan)].run(job)
    except APIError as exc:
        job.emit("error", _error_state(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the job's failure
        job.emit("error", ("inference_failed", f"{type(exc).__name__}: {exc}", None, None))
    outcome = next((k for k in counters if counters[k] != before.get(k)), "failed")
    lost = _lost(residency)
    conn.send(("status", {} if lost else _child_status(residency)))
    conn.send(("finished", (outcome, lost)))
    return lost


def _lost(residency: Any) -> bool:
    model = residency.model
    return model is not None and model.placement.lost() is not None


def _child_status(residency: Any) -> dict[str, Any]:
    from ..devices import model_devices

    out = residency.status()
    out["pid"] = os.getpid()
    if residency.model is not None:
        try:
            out["devices"], out["rpc_servers"] = model_devices(residency.model), residency.model.rpc
        except Exception as exc:  # noqa: BLE001 - e.g. a server lost just now: the next job says so
            out["devices_error"] = f"{type(exc).__name__}: {exc}"
    return out


class IsolatedModels:
    """The child process for models on RPC servers, and the relay to it (worker thread only)."""

    def __init__(self, settings: Settings, counters: dict[str, int]):
        self.settings = settings
        self.counters = counters
        self._proc: Any = None
        self._conn: Any = None
        self._log_dir: Path | None = None
        self._log_path: Path | None = None
        self.last_status: dict[str, Any] = {}

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="hoshikage-isolated-"))  # private (0700)
        log_path = self._log_dir / f"child-{len(list(self._log_dir.iterdir()))}.log"
        self._proc = ctx.Process(target=child_main, args=(child, self.settings, str(log_path)), daemon=True,
                                 name="hoshikage-rpc-model")
        self._proc.start()
        child.close()
        self._log_path = log_path
        log.info("started child process %d for models on RPC servers (log: %s)", self._proc.pid, log_path)

    def run(self, job: Any) -> None:
        """Run ``job`` in the child (started if needed); its events go to ``job``; APIError on failure.
        A child that ended on its own (idle unload) just before taking the job is started again."""
        for attempt in (1, 2):
            if not self.running:
                self._start()
            try:
                return self._relay(job)
            except _EndedQuietly:
                self._proc = self._conn = None
                if attempt == 2:
                    raise APIError("inference_failed", "the process for models on RPC servers ended twice "
                                   "before it could take the request") from None

    def _relay(self, job: Any) -> None:
        servers = ", ".join(job.plan.entry.rpc or self.settings.rpc_servers)
        sent, cancelled, failure, heard = False, 0.0, None, False
        last = time.monotonic()
        while True:
            try:
                if not sent:
                    self._conn.send(("job", job.plan))
                    sent = True
                if job.cancelled.is_set() and not cancelled:
                    self._conn.send(("cancel", job.cancel_reason))
                    cancelled = time.monotonic()
                if not self._conn.poll(POLL_S):
                    self._kill_if_stuck(last, cancelled)
                    continue
                last = time.monotonic()
                kind, data = self._conn.recv()
            except (EOFError, OSError):
                self._proc.join(STOP_WAIT_S)
                if not heard and self._proc.exitcode == 0:
                    raise _EndedQuietly from None
                self._count("failed")
                raise self._died(job.plan.entry.name, servers) from None
            heard = True
            if kind == "finished":
                outcome, exiting = data
                self._count(outcome)
                if exiting:  # it lost an RPC server and ends itself; the next job starts a new one
                    self._proc.join(STOP_WAIT_S)
                    self._proc = self._conn = None
                    self.last_status = {}
                if failure is not None:
                    raise failure
                return
            if kind == "status":
                self.last_status = data
            elif kind == "error":  # raised once the child has finished the job
                failure = APIError(*data)
            else:
                job.emit(kind, data)

    def _kill_if_stuck(self, last: float, cancelled: float) -> None:
        """Kill a child stuck in llama.cpp: silent for LOAD_TIMEOUT + REQUEST_TIMEOUT (e.g. connecting
        to an rpc-server busy with another client, which the pinned RPC client waits for without a
        limit; a working child sends every token or step), or CANCEL_GRACE_S after its job was
        cancelled. The relay then reports it as dead."""
        now, limit = time.monotonic(), self.settings.load_timeout + self.settings.request_timeout
        if now - last > limit or (cancelled and now - cancelled > CANCEL_GRACE_S):
            log.warning("killing the child process %d for models on RPC servers: no answer for %.0fs",
                        self._proc.pid, now - last)
            self._proc.kill()

    def _died(self, name: str, servers: str) -> APIError:
        self._proc.join(STOP_WAIT_S)
        code = self._proc.exitcode
        how = signal.Signals(-code).name if code is not None and code < 0 else f"exit status {code}"
        tail = [line.strip() for line in self._tail() if line.strip()]
        said = next((line for line in reversed(tail) if "error" in line.lower() or "crash" in line.lower()), None)
        self._proc = self._conn = None
        self.last_status = {}
        log.warning("the child process running %s on RPC servers %s ended (%s)%s", name, servers, how,
                    f": {said}" if said else "")
        return APIError("inference_failed", f"{name} runs on the RPC servers {servers}; the process running it "
                        f"ended ({how}){': ' + said if said else ''}. An RPC server was probably lost; the server "
                        "goes on, and the next request loads the model again once the servers are reachable")

    def _tail(self, lines: int = 20) -> list[str]:
        try:
            return self._log_path.read_text(errors="replace").splitlines()[-lines:] if self._log_path else []
        except OSError:
            return []

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def stop(self) -> None:
        """End the child (its model is freed there); idempotent."""
        if self._proc is None:
            return
        try:
            self._conn.send(("stop", None))
        except OSError:
            pass
        self._proc.join(STOP_WAIT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(STOP_WAIT_S)
        self._proc = self._conn = None
        self.last_status = {}
