"""Soak: many cycles of load -> request -> idle unload (IDLE_TIMEOUT=1 s), alternating the
autoregressive and the diffusion models, with the RAM-disk copies expiring now and then
(GREAT_TIMEOUT=3 s). The server's RSS after the last unload must be within a small margin of its
RSS after the first one (what libllama keeps once loaded is in the baseline).

``make test``: 4 cycles. ``make load``: HOSHIKAGE_SOAK_CYCLES=100 (figures in docs/reliability.md).
"""
from __future__ import annotations

import json
import time

from conftest import env_int

CYCLES = env_int("HOSHIKAGE_SOAK_CYCLES", 4)
MARGIN_MB = 30


def test_soak_load_request_unload_cycles(make_server):
    server = make_server({"N_CTX": "256", "IDLE_TIMEOUT": "1", "GREAT_TIMEOUT": "3", "REQUEST_TIMEOUT": "30"})
    models = ["smollm2", "dream", "llada"]
    unloaded = lambda s: s["loaded_model"] is None and not s["queue"]["running"]  # noqa: E731
    rss: list[float] = []
    loaded_rss: list[float] = []
    t0 = time.monotonic()
    for cycle in range(CYCLES + 1):
        model = models[cycle % len(models)]
        stream = cycle % 2 == 1
        r = server.post("/v1/chat/completions", {"model": model, "max_tokens": 6, "diffusion_steps": 3,
                                                 "stream": stream, "seed": cycle,
                                                 "messages": [{"role": "user", "content": f"Cycle {cycle}"}]})
        assert r.status_code == 200, r.text
        assert ("data: [DONE]" in r.text) if stream else r.json()["choices"][0]["message"]["content"] is not None
        loaded_rss.append(server.rss_mb())
        server.wait_status(unloaded, timeout=30, interval=0.2)
        if cycle % 5 == 4:  # now and then stay idle long enough for the RAM-disk copies to expire
            server.wait_status(lambda s: not s["ramdisk_copies"], timeout=30, interval=0.2)
        time.sleep(0.2)
        rss.append(server.rss_mb())
    status = server.status()
    elapsed = time.monotonic() - t0
    # rss[0] is after the first model's first unload; the three models are all used by cycle 2.
    baseline = max(rss[:3])
    figures = {"cycles": CYCLES, "elapsed_s": round(elapsed, 1), "rss_after_first_unload_mb": round(rss[0], 1),
               "baseline_mb": round(baseline, 1), "rss_after_last_unload_mb": round(rss[-1], 1),
               "max_rss_unloaded_mb": round(max(rss), 1), "max_rss_loaded_mb": round(max(loaded_rss), 1),
               "peak_rss_mb": status["memory"].get("peak_rss_mb"), "loads": status["loads"],
               "unloads": status["unloads"]}
    print("\nsoak:", json.dumps(figures))
    assert status["loads"] == status["unloads"] == CYCLES + 1
    assert rss[-1] - baseline < MARGIN_MB, figures
    assert server.proc.poll() is None
