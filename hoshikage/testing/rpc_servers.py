"""Loopback ``rpc-server`` processes for tests and benchmarks (CPU backend, 127.0.0.1 only).

Hoshikage itself never starts an rpc-server (it has no authentication; docs/rpc.md): only the
test suite and ``make bench`` do, through this helper, on the loopback interface. The program
is the build's ``ggml-rpc-server`` (``build_llama.py --rpc``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


class RPCServer:
    """One ``ggml-rpc-server -H 127.0.0.1 -p PORT`` child; ``stop()`` kills it, ``start()`` again
    brings it back on the same port."""

    def __init__(self, program: str | os.PathLike, port: int | None = None, threads: int = 1,
                 log_dir: Path | None = None):
        self.program = str(program)
        self.port = port or free_port()
        self.threads = threads
        self.log_path = (log_dir or Path("/tmp")) / f"rpc-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RPCServer:
        if self.proc is not None and self.proc.poll() is None:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.program, "-H", "127.0.0.1", "-p", str(self.port), "-t", str(self.threads)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.program} did not listen on {self.endpoint}; see {self.log_path}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill it (SIGKILL by default: the server vanishes as a crashed machine's would)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None


def start_servers(program: str | os.PathLike, count: int = 2, threads: int = 1,
                  log_dir: Path | None = None) -> list[RPCServer]:
    """``count`` loopback servers on free ports, listening when this returns."""
    servers: list[RPCServer] = []
    try:
        for _ in range(count):
            servers.append(RPCServer(program, threads=threads, log_dir=log_dir).start())
    except Exception:
        for server in servers:
            server.stop()
        raise
    return servers
