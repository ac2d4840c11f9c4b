"""Load: many concurrent clients on loopback, mixing autoregressive and diffusion models, streamed
and not, some hanging up midway. Every request ends with a complete answer or an explicit 429 /
503 (or an explicit error event in a stream); none is dropped; the server's own counters agree;
memory after the run (model unloaded) is within a margin of before.

``make test``: 10 clients x 2 requests. ``make load``: HOSHIKAGE_LOAD_CLIENTS=60,
HOSHIKAGE_LOAD_ROUNDS=4 (prints the figures reported in docs/reliability.md).
"""
from __future__ import annotations

import json
import time

from conftest import env_int
from loadgen import run_load

CLIENTS = env_int("HOSHIKAGE_LOAD_CLIENTS", 10)
ROUNDS = env_int("HOSHIKAGE_LOAD_ROUNDS", 2)
IDLE = 2


def wait_unloaded(server, timeout: float = 30) -> dict:
    return server.wait_status(lambda s: s["loaded_model"] is None and not s["queue"]["running"]
                              and s["queue"]["waiting"] == 0, timeout=timeout, interval=0.25)


def test_load_mixed_clients(make_server):
    server = make_server({"N_CTX": "256", "REQUEST_TIMEOUT": "30", "QUEUE_TIMEOUT": "20",
                          "MAX_QUEUE": str(max(4, CLIENTS // 4)), "IDLE_TIMEOUT": str(IDLE)})
    models = ["smollm2", "llada", "dream"]
    # Warm up: load each model once (probes, RAM-disk copies, allocator), then let it unload.
    for model in models:
        r = server.post("/v1/chat/completions", {"model": model, "max_tokens": 2, "diffusion_steps": 2,
                                                 "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200, r.text
    wait_unloaded(server)
    time.sleep(0.5)
    rss_before = server.rss_mb()
    counters_before = dict(server.status()["requests"])

    report = run_load(server.url, clients=CLIENTS, rounds=ROUNDS, models=models, deadline_s=900)
    summary = report.summary()
    print("\nload:", json.dumps(summary))

    bad = [o for o in report.outcomes if o.kind == "bad"]
    assert not bad, "\n".join(f"{o.model} stream={o.stream}: {o.detail}" for o in bad[:10])
    assert summary["answered"] == summary["requests"] == CLIENTS * ROUNDS  # nothing vanished
    assert summary["ok"] > 0
    if CLIENTS > int(server.env["MAX_QUEUE"]) + 1:
        assert summary["429"] > 0, "with more clients than MAX_QUEUE some must be refused explicitly"

    status = wait_unloaded(server, timeout=60)
    time.sleep(0.5)
    rss_after = server.rss_mb()
    counters = {k: v - counters_before.get(k, 0) for k, v in status["requests"].items()}
    print(f"RSS before {rss_before:.0f} MiB, after {rss_after:.0f} MiB; server counters {counters}; "
          f"peak {status['memory']}")
    # The server ran (or cancelled) every job that was not refused at the door (429).
    jobs = counters.get("completed", 0) + counters.get("failed", 0) + counters.get("cancelled", 0) \
        + counters.get("timed_out", 0)
    assert counters.get("completed", 0) >= summary["ok"]
    assert jobs <= summary["requests"] - summary["429"]
    assert rss_after - rss_before < 40, f"RSS grew from {rss_before:.0f} to {rss_after:.0f} MiB"
    assert server.proc.poll() is None
