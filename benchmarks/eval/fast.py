"""The ``fast_decoding`` figures (issue 14) from an eval run's rows: early stop and threshold
parallel decoding against the default fixed-step run, pooled over every model's eval prompts.

* ``early_stop_identical_fraction``: prompts whose answer with early stop is the fixed run's;
* ``threshold_used``: the threshold (with early stop) with the fewest forwards whose pooled
  accuracy is at most 1 point below the fixed run's (else the one with the smallest drop);
* ``forwards_ratio_threshold_vs_fixed``, ``accuracy_drop_points``: that run against the fixed run;
* ``answer_tps_ratio_vs_reference``: its answer tokens per second over llama-diffusion-cli's with
  the same flags at the default steps (the same canvas; the reference's answers are counted as
  the fixed run's, whose canvases the eval checks are identical).

The threshold is chosen on the same prompts it is scored on; ``per_model`` and ``thresholds``
show every candidate, so the choice can be checked.
"""
from __future__ import annotations

from typing import Any

MAX_DROP_POINTS = 1.0


def _find(rows: list[dict], tool: str = "hoshikage", threshold: float = 0.0, early_stop: bool = False) -> dict | None:
    """The default-steps row (reference mode, the default algorithm and schedule) with these settings."""
    for r in rows:
        if (r["tool"] == tool and r["frac"] == 1.0 and not r["corrected"]
                and (r["algorithm"], r["schedule"]) == (rows[0]["algorithm"], rows[0]["schedule"])
                and r.get("threshold", 0.0) == threshold
                and r.get("early_stop", False) == early_stop):
            return r
    return None


def _totals(rows: list[dict]) -> dict[str, float]:
    """ok, n, forwards, answer tokens and seconds summed over the rows' tasks."""
    out = {"ok": 0, "n": 0, "forwards": 0, "tokens": 0, "seconds": 0.0}
    for r in rows:
        for f in r["tasks"].values():
            out["ok"] += sum(1 for _, right in f["answers"] if right)
            out["n"] += f["n"]
            out["forwards"] += f.get("forwards", 0)
            out["tokens"] += f.get("answer_tokens", 0)
            out["seconds"] += f.get("seconds", 0.0)
    return out


def _compare(fixed: list[dict], fast: list[dict], cli: list[dict]) -> dict[str, Any]:
    a, b, c = _totals(fixed), _totals(fast), _totals(cli)
    tps = lambda t: t["tokens"] / t["seconds"] if t["seconds"] else None  # noqa: E731
    out = {"accuracy_fixed": a["ok"] / a["n"], "accuracy": b["ok"] / b["n"],
           "accuracy_drop_points": round(100 * (a["ok"] / a["n"] - b["ok"] / b["n"]), 2),
           "forwards_ratio_threshold_vs_fixed": round(b["forwards"] / a["forwards"], 4) if a["forwards"] else None}
    if cli and c["seconds"] and tps(b):  # the reference's answers are the fixed run's (identical canvases)
        out["answer_tps_ratio_vs_reference"] = round(tps(b) / (a["tokens"] / c["seconds"]), 3)
    return out


def _identical(fixed: dict, early: dict) -> tuple[int, int]:
    same = n = 0
    for task, f in fixed["tasks"].items():
        for (a, _), (b, _) in zip(f["answers"], early["tasks"][task]["answers"]):
            same, n = same + (a == b), n + 1
    return same, n


def fast_decoding(results: dict[str, Any]) -> dict[str, Any]:
    """The section (empty when the rows lack the fixed run, early stop or thresholds)."""
    models = {name: m["rows"] for name, m in results.get("models", {}).items()}
    fixed = {n: _find(rows) for n, rows in models.items()}
    early = {n: _find(rows, early_stop=True) for n, rows in models.items()}
    cli = {n: _find(rows, tool="llama-diffusion-cli") for n, rows in models.items()}
    thresholds = sorted({r.get("threshold", 0.0) for rows in models.values() for r in rows} - {0.0})
    if not models or None in fixed.values() or None in early.values() or not thresholds:
        return {}
    counts = [_identical(fixed[n], early[n]) for n in models]
    out: dict[str, Any] = {"early_stop_identical_fraction": sum(s for s, _ in counts) / sum(n for _, n in counts),
                           "early_stop_forwards_ratio_vs_fixed": _compare(
                               list(fixed.values()), list(early.values()), [])["forwards_ratio_threshold_vs_fixed"]}
    candidates = {}
    for t in thresholds:
        rows = [_find(models[n], threshold=t, early_stop=True) for n in models]
        if None not in rows:
            candidates[t] = _compare(list(fixed.values()), rows, [c for c in cli.values() if c])
    if not candidates:
        return out
    ok = [t for t, c in candidates.items() if c["accuracy_drop_points"] <= MAX_DROP_POINTS]
    used = (min(ok, key=lambda t: candidates[t]["forwards_ratio_threshold_vs_fixed"]) if ok
            else min(candidates, key=lambda t: candidates[t]["accuracy_drop_points"]))
    best = candidates[used]
    out.update(threshold_used=used, forwards_ratio_threshold_vs_fixed=best["forwards_ratio_threshold_vs_fixed"],
               accuracy_drop_points=best["accuracy_drop_points"],
               answer_tps_ratio_vs_reference=best.get("answer_tps_ratio_vs_reference"),
               accuracy_fixed=round(best["accuracy_fixed"], 4), accuracy_threshold=round(best["accuracy"], 4),
               thresholds={f"{t:g}": c for t, c in candidates.items()},
               per_model={n: _compare([fixed[n]], [_find(models[n], threshold=used, early_stop=True)],
                                      [cli[n]] if cli[n] else []) for n in models})
    return out
