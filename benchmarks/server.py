"""Server: a non-streaming ``/v1/chat/completions`` over HTTP against the same ``generate()``.

The Hoshikage server runs as a subprocess (its own registry in a temporary HOSHIKAGE_HOME,
no RAM-disk copy, the harness's thread count); the library call runs in the harness's own
process on its own Model. Requests and library calls alternate; the overhead of one pair is
HTTP wall time ÷ library wall time, measured by the client on a kept-alive connection.

When a ``llama-server`` is available (``python build_llama.py --with-server``; see
``find_llama_server``) the same request is also sent to it; ``cache_prompt`` is turned off
there so each request does the same prefill as Hoshikage's.
"""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .common import REPO, BenchError, alternate, hk_env, ratio, summary

QUESTION = "Explain in three sentences why the sky is blue."
STOP = ["<|im_end|>", "</s>"]  # the server's DEFAULT_STOP, given to the library call as well


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(conn_args: tuple[str, int], path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited with {proc.returncode} before it was ready")
        try:
            c = http.client.HTTPConnection(*conn_args, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"the server did not answer {path} within {timeout:.0f} s")


class _Client:
    """``post`` returns (wall seconds, decoded JSON). A new connection per request: the servers'
    keep-alive timeouts (uvicorn: 5 s) are shorter than a library call on a busy machine."""

    def __init__(self, port: int):
        self.port = port

    def post(self, path: str, body: dict) -> tuple[float, dict]:
        data = json.dumps(body).encode()
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        wall = time.perf_counter() - t0
        if resp.status != 200:
            raise BenchError(f"POST {path}: HTTP {resp.status}: {raw[:500]!r}")
        return wall, json.loads(raw)


def build_llama_server() -> int:
    """``build_llama.py --with-server`` without moving ``current.json`` off the default build.

    The server build is a separate cache folder; build_llama.py points ``current.json`` at
    whatever it built last, which would switch every Hoshikage process on this machine to it.
    """
    sys.path.insert(0, str(REPO))
    import build_llama

    pointer = build_llama.cache_dir() / "current.json"
    saved = pointer.read_text() if pointer.exists() else None
    try:
        return build_llama.main(["--with-server"])
    finally:
        if saved is not None:
            pointer.write_text(saved)


def find_llama_server() -> Path | None:
    """llama-server from the ``--with-server`` build, which has its own cache folder."""
    proc = subprocess.run([sys.executable, str(REPO / "build_llama.py"), "--with-server", "--print-dir"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    manifest = Path(proc.stdout.strip()) / "hoshikage-build.json"
    try:
        path = Path(json.loads(manifest.read_text())["tools"]["llama-server"])
    except (OSError, ValueError, KeyError):
        return None
    return path if path.is_file() else None


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """Terminate every process, then wait for each (killed after 30 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def start_hoshikage_server(model_path: Path, threads: int,
                           extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """``hoshikage serve`` with a registry holding only this model (as ``smollm2``), its settings
    plus ``extra_env``; returns (process, port) once it answers."""
    home = Path(tempfile.mkdtemp(prefix="hoshikage-bench-"))
    (home / "model_map.json").write_text(json.dumps({"smollm2": {"path": str(model_path), "stop": []}}))
    port = _free_port()
    env = {**hk_env(), "HOSHIKAGE_HOME": str(home), "N_THREADS": str(threads), "RAMDISK_PATH": "",
           "LOG_LEVEL": "WARNING", "IDLE_TIMEOUT": "3600", **(extra_env or {})}
    env.pop("API_KEY", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hoshikage", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--home", str(home)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(("127.0.0.1", port), "/v1/status", proc)
    except BenchError as exc:
        proc.kill()
        raise BenchError(f"{exc}; its log: {(home / 'server.log').read_text()[-2000:]}") from None
    return proc, port


def run_server(model_path: Path, threads: int, reps: int, max_tokens: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    import hoshikage as hk

    messages = [{"role": "user", "content": QUESTION}]
    body = {"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "seed": 1}
    server, port = start_hoshikage_server(model_path, threads)
    try:
        client = _Client(port)
        client.post("/v1/chat/completions", body)  # warm-up: loads the model
        model = hk.Model(model_path)
        hk.generate(model, messages=messages, max_tokens=8, temperature=0, n_threads=threads)  # warm-up

        def http_side() -> dict:
            wall, out = client.post("/v1/chat/completions", body)
            return {"wall_ms": 1000 * wall, "text": out["choices"][0]["message"]["content"],
                    "completion_tokens": out["usage"]["completion_tokens"]}

        def library_side() -> dict:
            t0 = time.perf_counter()
            c = hk.generate(model, messages=messages, max_tokens=max_tokens, temperature=0, seed=1, stop=STOP,
                            n_threads=threads)
            return {"wall_ms": 1000 * (time.perf_counter() - t0), "text": c.text,
                    "completion_tokens": c.completion_tokens}

        rows = alternate(reps, [("library", library_side), ("http", http_side)], log)
        model.close()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    for i, row in enumerate(rows):
        if row["http"]["text"] != row["library"]["text"]:
            raise BenchError(f"server rep {i + 1}: HTTP and library answers differ:\n"
                             f"{row['http']['text']!r}\n{row['library']['text']!r}")
    result = {
        "question": QUESTION, "max_tokens": max_tokens,
        "completion_tokens": rows[0]["library"]["completion_tokens"], "answers_identical": True,
        "library_wall_ms": summary([r["library"]["wall_ms"] for r in rows]),
        "http_wall_ms": summary([r["http"]["wall_ms"] for r in rows]),
        "overhead_ratio": summary([ratio(r["http"]["wall_ms"], r["library"]["wall_ms"]) for r in rows]),
        "reps": rows,
    }
    log(f"    overhead ratio {result['overhead_ratio']['median']:.3f}")
    result["llama_server"] = _vs_llama_server(model_path, threads, reps, max_tokens, body, log)
    return result


def _vs_llama_server(model_path: Path, threads: int, reps: int, max_tokens: int, body: dict,
                     log: Callable[[str], None]) -> dict[str, Any]:
    exe = find_llama_server()
    if exe is None:
        return {"skipped": "llama-server is not built; `python -m benchmarks.server --build-llama-server` "
                           "builds it (a separate cached build, ~10 min on 2 cores)"}
    log("    against llama-server")
    p_ls = _free_port()
    hk_server, p_hk = start_hoshikage_server(model_path, threads)
    procs = [hk_server, subprocess.Popen([str(exe), "-m", str(model_path), "--host", "127.0.0.1", "--port",
                                          str(p_ls), "-t", str(threads), "-c", "4096", "-np", "1"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_ready(("127.0.0.1", p_ls), "/health", procs[1])
        c_hk, c_ls = _Client(p_hk), _Client(p_ls)
        ls_body = {**body, "cache_prompt": False}
        c_hk.post("/v1/chat/completions", body)
        c_ls.post("/v1/chat/completions", ls_body)

        def hk_side() -> dict:
            wall, out = c_hk.post("/v1/chat/completions", body)
            return {"wall_ms": 1000 * wall, "completion_tokens": out["usage"]["completion_tokens"],
                    "text": out["choices"][0]["message"]["content"]}

        def ls_side() -> dict:
            wall, out = c_ls.post("/v1/chat/completions", ls_body)
            return {"wall_ms": 1000 * wall, "completion_tokens": out["usage"]["completion_tokens"],
                    "text": out["choices"][0]["message"]["content"]}

        rows = alternate(reps, [("llama_server", ls_side), ("hoshikage_server", hk_side)], log)
    finally:
        stop_processes(procs)
    # Throughput per request (answers may differ in length if the templates differ).
    tps = {side: [r[side]["completion_tokens"] / (r[side]["wall_ms"] / 1000) for r in rows]
           for side in ("llama_server", "hoshikage_server")}
    return {
        "llama_server": str(exe),
        "answers_identical": all(r["llama_server"]["text"] == r["hoshikage_server"]["text"] for r in rows),
        "llama_server_wall_ms": summary([r["llama_server"]["wall_ms"] for r in rows]),
        "hoshikage_server_wall_ms": summary([r["hoshikage_server"]["wall_ms"] for r in rows]),
        "tokens_per_s_ratio": summary([ratio(h, l) for h, l in zip(tps["hoshikage_server"], tps["llama_server"])]),
        "reps": rows,
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["--build-llama-server"]:
        sys.exit("usage: python -m benchmarks.server --build-llama-server")
    sys.exit(build_llama_server())
