"""The fast_decoding figures (benchmarks/eval/fast.py) from eval rows, the eval grid's flags, and the
section's RESULTS.md table: on hand-made rows whose answer is known."""
from __future__ import annotations

import pytest

from benchmarks.eval.__main__ import Config, algorithm_of, config_args, fast_decoding_grid, flag_set, pareto_grid
from benchmarks.eval.fast import fast_decoding
from benchmarks.fast_decoding import tables

BASE = ("-ub", "96", "--diffusion-steps", "96", "--diffusion-block-length", "32", "--temp", "0")


def _row(tool="hoshikage", threshold=0.0, early_stop=False, ok=(1, 1, 1, 1), forwards=400, seconds=4.0,
         texts=("a", "b", "c", "d"), algorithm="CONFIDENCE"):
    answers = [[t, bool(r)] for t, r in zip(texts, ok)]
    task = {"accuracy": sum(ok) / len(ok), "n": len(ok), "forwards": forwards, "answer_tokens": 40,
            "seconds": seconds, "answers": answers, "forwards_per_answer_token": forwards / 40,
            "answer_tokens_per_s": 40 / seconds}
    return {"tool": tool, "frac": 1.0, "algorithm": algorithm, "corrected": False, "schedule": "block",
            "threshold": threshold, "early_stop": early_stop, "tasks": {"add": task}}


def test_figures_pick_the_cheapest_threshold_within_one_point():
    rows = [_row(), _row(tool="llama-diffusion-cli", seconds=8.0), _row(early_stop=True, forwards=300),
            _row(threshold=0.5, early_stop=True, ok=(1, 0, 0, 1), forwards=40, seconds=0.4),
            _row(threshold=0.9, early_stop=True, forwards=100, seconds=1.0),
            _row(threshold=0.99, early_stop=True, forwards=200, seconds=2.0)]
    f = fast_decoding({"models": {"m": {"rows": rows}}})
    assert f["early_stop_identical_fraction"] == 1.0 and f["early_stop_forwards_ratio_vs_fixed"] == 0.75
    assert f["threshold_used"] == 0.9  # 0.5 is cheaper but 50 points worse
    assert f["forwards_ratio_threshold_vs_fixed"] == 0.25 and f["accuracy_drop_points"] == 0
    assert f["answer_tps_ratio_vs_reference"] == 8.0  # 40 tok / 1 s against 40 tok / 8 s
    assert f["per_model"]["m"]["forwards_ratio_threshold_vs_fixed"] == 0.25
    text = "\n".join(tables({**f, "prompts_per_task": 4}))
    assert "| 0.9 | 100.0% (100.0%) | +0.0 | 0.250 | 8.00x |" in text


def test_a_changed_answer_counts_against_early_stop_and_no_threshold_within_a_point_is_reported():
    rows = [_row(), _row(early_stop=True, texts=("a", "b", "x", "d")),
            _row(threshold=0.9, early_stop=True, ok=(1, 1, 1, 0), forwards=100)]
    f = fast_decoding({"models": {"m": {"rows": rows}}})
    assert f["early_stop_identical_fraction"] == 0.75
    assert f["threshold_used"] == 0.9 and f["accuracy_drop_points"] == 25.0  # the least bad, not hidden
    assert f["answer_tps_ratio_vs_reference"] is None  # no llama-diffusion-cli row
    assert fast_decoding({"models": {"m": {"rows": rows[:1]}}}) == {}


def test_grid_flags():
    args, steps, sched = config_args(BASE, Config(1.0, threshold=0.9, early_stop=True))
    assert args[args.index("--diffusion-threshold") + 1] == "0.9" and "--diffusion-early-stop" in args
    assert steps == 96 and sched == "block"
    assert "--diffusion-threshold" not in config_args(BASE, Config(1.0))[0]
    grid = fast_decoding_grid()
    assert grid[0].tools == ("hoshikage", "llama-diffusion-cli") and all(c.early_stop for c in grid[1:])
    full = pareto_grid(False)
    assert {c.threshold for c in full} == {0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99}
    assert {(c.threshold > 0, c.early_stop) for c in full} == {(False, True), (True, False), (True, True)}


def test_the_default_rows_run_the_model_s_own_algorithm():
    entropy = (*BASE, "--diffusion-algorithm", "1")
    assert algorithm_of(config_args(entropy, Config(1.0))[0]) == "ENTROPY"  # kept, not overridden
    assert algorithm_of(config_args(entropy, Config(1.0, "MARGIN"))[0]) == "MARGIN"
    assert algorithm_of(BASE) == "CONFIDENCE"  # llama-diffusion-cli's default when the flag is absent
    # the --full grid's explicit CONFIDENCE row is the default row again: run() skips it by its flags
    assert (flag_set(config_args(BASE, Config(1.0, "CONFIDENCE"))[0])
            == flag_set(config_args((*BASE, "--diffusion-algorithm", "4"), Config(1.0))[0]))
    with pytest.raises(ValueError, match="--diffusion-algorithm '9'"):
        algorithm_of([*BASE, "--diffusion-algorithm", "9"])
    # fast_decoding compares with the model's default rows, whatever their algorithm
    rows = [_row(algorithm="ENTROPY"), _row(early_stop=True, forwards=300, algorithm="ENTROPY"),
            _row(threshold=0.9, early_stop=True, forwards=10),
            _row(threshold=0.9, early_stop=True, forwards=100, algorithm="ENTROPY")]
    assert fast_decoding({"models": {"m": {"rows": rows}}})["forwards_ratio_threshold_vs_fixed"] == 0.25
