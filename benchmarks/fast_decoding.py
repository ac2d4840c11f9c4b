"""``make bench`` section ``fast_decoding`` (issue 14): the trained models' eval prompts at their
default steps (models.json), with early stop, and with each threshold plus early stop, Hoshikage
in-process and llama-diffusion-cli with the same flags; the figures are benchmarks/eval/fast.py's.
``make eval`` measures the same on more prompts, with the whole Pareto grid and its plot."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from .common import BenchError


def run_fast_decoding(threads: int, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from .eval.__main__ import fast_decoding_grid, run
    from .eval.fast import fast_decoding
    from .eval.suite import MODELS_JSON

    n = 3 if quick else 10
    log(f"== fast decoding: trained models, {n} prompts per task, early stop and thresholds vs the default steps")
    args = argparse.Namespace(models_json=str(MODELS_JSON), model=None, no_cli=False, full=False, quick=quick,
                              table=False, pareto=False, n=n, threads=threads)
    results = run(args, fast_decoding_grid())
    out = fast_decoding(results)
    if "threshold_used" not in out or out.get("answer_tps_ratio_vs_reference") is None:
        raise BenchError("fast_decoding: the eval rows lack the fixed run, early stop, a threshold or "
                         "llama-diffusion-cli (is it built?)")
    out["prompts_per_task"] = n
    out["threads"] = threads
    return out


def tables(f: dict[str, Any]) -> list[str]:
    """RESULTS.md lines for the section."""
    if "error" in f:
        return [f"**Failed:** `{f['error']}`"]
    lines = [f"Trained models, {f.get('prompts_per_task')} eval prompts per task, reference mode, the default "
             f"steps of benchmarks/eval/models.json. Early stop: identical answers on "
             f"{100 * f['early_stop_identical_fraction']:.0f}% of prompts, "
             f"{f['early_stop_forwards_ratio_vs_fixed']:.2f}x the forwards. Threshold used: "
             f"{f['threshold_used']:g} (with early stop; chosen on these prompts).", "",
             "| threshold + early stop | accuracy (fixed steps) | accuracy drop (points) | forwards vs fixed "
             "| answer tokens/s vs llama-diffusion-cli |", "|---|---|---|---|---|"]
    for t, c in f.get("thresholds", {}).items():
        tps = c.get("answer_tps_ratio_vs_reference")
        lines.append(f"| {t} | {100 * c['accuracy']:.1f}% ({100 * c['accuracy_fixed']:.1f}%) | "
                     f"{c['accuracy_drop_points']:+.1f} | {c['forwards_ratio_threshold_vs_fixed']:.3f} | "
                     f"{'—' if tps is None else f'{tps:.2f}x'} |")
    lines += ["", "| model (threshold used) | accuracy drop (points) | forwards vs fixed | answer tokens/s vs "
              "llama-diffusion-cli |", "|---|---|---|---|"]
    for name, c in f.get("per_model", {}).items():
        tps = c.get("answer_tps_ratio_vs_reference")
        lines.append(f"| {name} | {c['accuracy_drop_points']:+.1f} | {c['forwards_ratio_threshold_vs_fixed']:.3f} | "
                     f"{'—' if tps is None else f'{tps:.2f}x'} |")
    return lines
