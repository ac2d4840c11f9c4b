"""The benchmark harness works: it runs, asserts token identity, and writes every key.

Speed is not tested here (that is what ``make bench`` reports); these tests only pin down
that the harness measures what it claims to and fails when the two sides disagree.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # benchmarks/ is not an installed package

from benchmarks import common, diffusion, explain, report, run  # noqa: E402
DIFFUSION_KEYS = ("tokens_per_s_ratio_vs_reference", "tokens_per_s_ratio_vs_reference_sampling_heavy",
                  "sampling_ms_per_step_ratio_vs_reference", "peak_rss_ratio_vs_reference",
                  "peak_rss_ratio_vs_reference_cfg")


def _run_harness(tmp_path: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--reps", "1", "--out",
                           str(tmp_path), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "RESULTS.md").is_file()
    return json.loads((tmp_path / "results.json").read_text())


def test_quick_diffusion_asserts_token_identity_and_writes_the_keys(tmp_path):
    # One full-vocabulary configuration (llama-diffusion-cli) and one with CFG (ref_driver).
    results = _run_harness(tmp_path, "--sections", "diffusion", "--configs",
                           "tiny-llada-c64-s16-full,tiny-llada-c64-s16-cfg")
    assert set(results["targets"]) == set(run.TARGETS)
    d = results["diffusion"]
    assert d["token_identity_asserted"] == 2
    assert all(c["token_identity"]["identical"] for c in d["configs"])
    for key in DIFFUSION_KEYS:
        assert key in d
    assert d["sampling_ms_per_step_ratio_vs_reference"] > 0  # the full-vocabulary configuration
    assert d["peak_rss_ratio_vs_reference_cfg"] > 0  # the CFG configuration, through ref_driver
    assert results["targets"]["diffusion.peak_rss_ratio_vs_reference_cfg"]["value"] == \
        d["peak_rss_ratio_vs_reference_cfg"]
    cfg = next(c for c in d["configs"] if c["config"]["cfg_scale"])
    assert cfg["reference_tool"].startswith("ref_driver")
    for side in ("reference", "hoshikage"):
        assert cfg[side]["peak_rss_mb"]["median"] > 10
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Token identity asserted on 2 configurations" in text
    assert (tmp_path / "plots" / "diffusion_tps_ratio.png").is_file()

    # The "why" of a miss, whatever the speed: mark two keys missed and explain them.
    for key in ("diffusion.sampling_ms_per_step_ratio_vs_reference", "diffusion.peak_rss_ratio_vs_reference_cfg"):
        results["targets"][key]["met"] = False
    why = explain.explain(results, log=lambda msg: None)
    sampling = why["diffusion.sampling_ms_per_step_ratio_vs_reference"]
    assert sampling["config"].startswith("llada-tiny c64 s16") and "per step, llama.cpp" in sampling["split"]
    assert sampling["profile"]["sampling_ms_per_step"] > 0
    assert any("sampling/" in row["function"] for row in sampling["profile"]["top"])  # the numpy sampler shows up
    rss = why["diffusion.peak_rss_ratio_vs_reference_cfg"]
    assert rss["rss"]["import_only_mb"] > 10 and "CFG" in rss["why"]
    results["explanations"] = why
    assert "## Why targets were missed" in report.render(results, [])


@pytest.mark.slow
def test_quick_ar_and_server_write_their_keys(tmp_path):
    results = _run_harness(tmp_path, "--sections", "ar,server")
    assert results["ar"]["gen_tps_ratio_vs_llama_completion"] > 0
    assert results["ar"]["llama_completion"]["text_matches_every_rep"]
    assert "gen_tps_ratio_vs_llama_cpp_python" in results["ar"]  # None when its venv is absent
    assert results["server"]["overhead_ratio"] > 0
    assert results["server"]["answers_identical"]


def test_a_token_difference_fails_the_run(monkeypatch, tmp_path):
    def fake_worker(cmd, **kw):
        out = {"identical": False, "first_difference": 40, "canvas": 64, "n_prompt": 28, "prompt_tokens": []}
        return common.Proc(list(cmd), 0, json.dumps(out) + "\n", "", 0.1, 50.0)

    monkeypatch.setattr(diffusion, "run_measured", fake_worker)
    cfg = diffusion.quick_configs()[0]
    with pytest.raises(common.BenchError, match="differ.*position 40"):
        diffusion.identity_check(cfg, tmp_path / "m.gguf", 1)


def test_reference_log_parsing():
    log = ("llama_model_loader: ...\ndiffusion step: 15/16 [====] 93%\n"
           "total time: 1275.90ms, time per step: 79.74ms, sampling time per step: 3.69ms\n"
           "\n two lines\nof canvas\nllama_free: later log\n")
    total, sampling, after = diffusion.parse_reference_log(log)
    assert (total, sampling) == (1275.90, 3.69)
    assert after.startswith(" two lines\nof canvas" + "\n")
    with pytest.raises(common.BenchError):
        diffusion.parse_reference_log("no timing here")


def test_targets_are_judged_in_the_right_direction():
    results = {"diffusion": {"tokens_per_s_ratio_vs_reference": 0.9, "peak_rss_ratio_vs_reference": 1.05},
               "server": {"overhead_ratio": 1.2}}
    t = run.evaluate(results)
    assert t["diffusion.tokens_per_s_ratio_vs_reference"]["met"] is False  # >= 1.0
    assert t["diffusion.peak_rss_ratio_vs_reference"]["met"] is True  # <= 1.1
    assert t["server.overhead_ratio"]["met"] is False  # <= 1.05
    assert t["ar.gen_tps_ratio_vs_llama_cpp_python"] == {"value": None, "target": ">= 1", "met": None}


def test_summary_is_median_min_max_of_the_measured_values():
    assert common.summary([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert common.summary([None])["median"] is None


def _row(name: str, tps: float, **cfg) -> dict:
    from dataclasses import asdict

    c = asdict(diffusion.DiffConfig(name, "llada-tiny", 64, 16, **cfg))
    ratios = {k: {"median": v} for k, v in (("tokens_per_s", tps), ("sampling_ms_per_step", 1.0),
                                             ("decode_ms_per_step", 1.0), ("peak_rss", 1.0))}
    return {"config": c, "ratios": ratios, "reference_sampling_share": {"median": 0.5},
            "token_identity": {"checked": True, "identical": True}}


def test_rerun_configurations_replace_only_their_rows():
    old = {"configs": [_row("a", 0.7), _row("b", 1.1)], "reps": 5}
    old.update(diffusion.headline(old["configs"]))
    new = {"configs": [_row("a", 0.9)], "measured": {"started": "later"}}
    merged = run.merge_diffusion_rows(old, new)
    assert [r["config"]["name"] for r in merged["configs"]] == ["a", "b"]
    assert merged["configs"][0]["remeasured"] == "later" and "remeasured" not in merged["configs"][1]
    assert merged["tokens_per_s_ratio_vs_reference"] == 0.9 and merged["reps"] == 5


def test_a_failing_section_is_reported_and_the_others_go_on():
    """benchmarks.run.guarded: a section's BenchError becomes its {"error"} entry and one line in
    the run's errors; a section that works is returned as it is."""
    from benchmarks.common import BenchError
    from benchmarks.run import guarded

    errors: list[str] = []

    def broken():
        raise BenchError("llama-diffusion-cli printed nothing\nfull log: x")

    assert guarded("rpc", errors, broken) == {"error": "llama-diffusion-cli printed nothing\nfull log: x"}
    assert guarded("server", errors, lambda: {"overhead_ratio": 1.0}) == {"overhead_ratio": 1.0}
    assert errors == ["rpc: llama-diffusion-cli printed nothing"]
