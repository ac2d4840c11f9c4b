"""The prompt-cache section of the harness (benchmarks/prompt_cache.py): its conversation fits one
context bucket on both turns, its report renders, and a merge keeps the other sections'
explanations. Not timed, and no live run here (`make bench` / `--quick --sections prompt_cache`
measures it: minutes of prefill on 2 cores)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # benchmarks/ is not an installed package

from benchmarks import prompt_cache, report, run  # noqa: E402


@pytest.mark.parametrize("target", [1000, 2000])
def test_both_turns_share_one_context_bucket(smollm2_path, target):
    c = prompt_cache.build(Path(smollm2_path), target)
    assert c["previous_tokens"] >= target and c["next_tokens"] > c["previous_tokens"]
    assert c["next"][:len(c["previous"])] == c["previous"]  # the next turn extends the previous one
    size = c["bucket"]
    assert size // 2 < c["previous_tokens"] + c["max_tokens"] <= size
    assert size // 2 < c["next_tokens"] + c["max_tokens"] <= size


def test_the_section_is_judged_and_rendered():
    section = {"turns": 20, "previous_tokens": 2090, "next_tokens": 2132, "max_tokens": 16, "bucket": 4096,
               "cached_ttft_ms": {"median": 900.0, "min": 800.0, "max": 1000.0, "n": 3},
               "uncached_ttft_ms": {"median": 9000.0, "min": 8000.0, "max": 10000.0, "n": 3},
               "cached_tokens": {"median": 2048, "min": 2048, "max": 2048, "n": 3},
               "ttft_ratio": 10.0, "ttft_ratio_summary": {"median": 10.0, "min": 8.0, "max": 12.5, "n": 3},
               "answers_identical": True, "llama_server": {"skipped": "llama-server is not built"}}
    t = run.evaluate({"prompt_cache": section})["prompt_cache.ttft_ratio"]
    assert t == {"value": 10.0, "target": ">= 5", "met": True}
    text = "\n".join(report._prompt_cache_tables(section))
    assert "10.00 (8.00–12.50)" in text and "2048" in text and "not measured — llama-server is not built" in text


def test_a_merge_keeps_the_explanations_of_the_sections_not_run(tmp_path):
    old = {"errors": [], "server": {"overhead_ratio": 1.2}, "prompt_cache": {"ttft_ratio": 3.0},
           "explanations": {"server.overhead_ratio": {"why": "x"}, "prompt_cache.ttft_ratio": {"why": "old"}}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    merged = run._merged(tmp_path / "results.json", {"errors": [], "prompt_cache": {"ttft_ratio": 9.0}},
                         ["prompt_cache"])
    assert merged["server"] == old["server"] and merged["prompt_cache"]["ttft_ratio"] == 9.0
    assert merged["explanations"] == {"server.overhead_ratio": {"why": "x"}}
