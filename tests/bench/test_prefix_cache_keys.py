"""The prefix_cache section's keys (benchmarks/prefix_cache.py ``_keys``) on hand-made figures."""
from __future__ import annotations

from benchmarks.prefix_cache import _keys
from benchmarks.run import evaluate


def _model(acc_uncached: float, acc_cached: float, tps_uncached: float = 10.0) -> dict:
    side = {"uncached": (acc_uncached, tps_uncached), "cached": (acc_cached, 2 * tps_uncached),
            "cached_threshold": (acc_cached, 60.0), "llama-diffusion-cli": (acc_uncached, 10.0)}
    return {k: {"accuracy": a, "answer_tokens_per_s": t, "peak_rss_mb": 64.0} for k, (a, t) in side.items()}


def test_keys_take_the_worse_model_and_a_two_point_drop_meets_its_target():
    keys = _keys({"a": _model(0.97, 0.96), "b": _model(0.99, 0.97, tps_uncached=8.0)})
    assert keys["per_model"]["a"]["accuracy_drop_points"] == 1.0
    assert keys["accuracy_drop_points"] == 2.0  # 0.99 - 0.97 is 2.0000000000000018 before rounding
    assert keys["speedup_vs_uncached"] == 2.0 and keys["answer_tps_ratio_vs_reference_with_threshold"] == 6.0
    targets = evaluate({"prefix_cache": keys})
    assert targets["prefix_cache.accuracy_drop_points"]["met"] is True
