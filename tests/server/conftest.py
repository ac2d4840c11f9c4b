"""Live servers for the server tests: ``hoshikage serve`` in a subprocess on a free loopback port.

Each server gets its own temporary HOSHIKAGE_HOME (registry, models/), its own RAM-disk folder
and a log file, and runs with N_THREADS=1 (the test machines have two cores, shared). Models:
SmolLM2 (real, autoregressive) and the tiny random-weight diffusion test models.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """One ``hoshikage serve`` process."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.ramdisk = home / "ramdisk"
        self.ramdisk.mkdir(exist_ok=True)
        self.log_path = home / "server.log"
        self.stdout_path = home / "stdout.txt"
        self.port = free_port()
        self.api_key = (env or {}).get("API_KEY")
        self.env = {**os.environ, "HOSHIKAGE_HOME": str(home), "N_THREADS": "1", "RAMDISK_PATH": str(self.ramdisk),
                    "LOG_FILE_PATH": str(self.log_path), "IDLE_TIMEOUT": "600", "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``hoshikage <args>`` against this server's home (the server need not run)."""
        return subprocess.run([sys.executable, "-m", "hoshikage", *args], env=self.env, cwd=self.home,
                              capture_output=True, text=True, timeout=60)

    def start(self, timeout: float = 60) -> LiveServer:
        out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "hoshikage", "serve", "--port", str(self.port)],
                                     env=self.env, cwd=self.home, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/v1/status", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not start in {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"server ignored signal {sig} for {timeout}s:\n{self.output()}") from None

    def output(self) -> str:
        parts = []
        for p in (self.stdout_path, self.log_path):
            if p.exists():
                parts.append(p.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []

    def status(self) -> dict:
        r = httpx.get(self.url + "/v1/status", timeout=10)
        r.raise_for_status()
        return r.json()

    def wait_status(self, predicate, timeout: float = 15, interval: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        status = self.status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched in {timeout}s: {json.dumps(status)}")
            time.sleep(interval)
            status = self.status()
        return status

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def openai(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "unused", max_retries=0,
                             timeout=kw.pop("timeout", 120), **kw)

    def post(self, path: str, body: dict, **kw) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers(), timeout=kw.pop("timeout", 120), **kw)


@pytest.fixture(scope="session")
def model_paths(native_build, smollm2_path) -> dict[str, Path]:
    from hoshikage.testing.diffusion_models import ensure_test_model

    return {"smollm2": Path(smollm2_path), "llada": ensure_test_model("llada-tiny"),
            "dream": ensure_test_model("dream-tiny")}


def write_registry(home: Path, model_paths: dict[str, Path]) -> None:
    """The registry the tests use: SmolLM2, LLaDA (block schedule) and Dream (timestep schedule)."""
    home.mkdir(parents=True, exist_ok=True)
    entries = {
        "smollm2": {"path": str(model_paths["smollm2"]), "stop": []},
        "llada": {"path": str(model_paths["llada"]), "stop": [], "test_model": True,
                  "description": "TEST MODEL: random weights", "max_tokens": 24,
                  "diffusion": {"schedule": 1, "block_length": 8, "steps": 6}},
        "dream": {"path": str(model_paths["dream"]), "stop": [], "test_model": True,
                  "description": "TEST MODEL: random weights", "max_tokens": 24,
                  "diffusion": {"schedule": 0, "eps": 0.001, "steps": 6}},
    }
    (home / "model_map.json").write_text(json.dumps(entries, indent=2))


@pytest.fixture(scope="module")
def make_server(tmp_path_factory, model_paths):
    """Factory: ``make_server(env={...}) -> LiveServer`` (started; stopped at module end)."""
    servers: list[LiveServer] = []

    def make(env: dict[str, str] | None = None, start: bool = True) -> LiveServer:
        home = tmp_path_factory.mktemp("hoshikage-home")
        write_registry(home, model_paths)
        server = LiveServer(home, env)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        try:
            server.stop()
        except AssertionError:
            pass
