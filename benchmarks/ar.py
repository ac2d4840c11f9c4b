"""Autoregressive: Hoshikage against llama-cpp-python, llama-completion and llama-bench.

Same GGUF (SmolLM2-135M Q4_1), same raw-text prompt, greedy, same thread count. Per
repetition, three processes alternate: ``llama-completion``, llama-cpp-python (its own venv,
``lcpp_worker.py``) and Hoshikage (``worker.py ar``). The two Python sides are timed the
same way from outside their library (llama-cpp-python with ``flash_attn=True``, llama.cpp's
default on CPU, which Hoshikage keeps): time to first token from the call to the first text,
generation tokens/s over the tokens after the first. ``llama-completion``'s figures are its
own ``common_perf_print`` lines: its eval tokens/s counts decode time only (sampling is
reported apart), so it flatters the C++ tool slightly against both Python sides.
``llama-bench`` (pp/tg, its own repetitions) is reported for context, not paired.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from . import lcpp_env
from .common import REPO, BenchError, alternate, hk_env, python_cmd, ratio, run_measured, summary, tool

PROMPT = ("The history of astronomy is one of the oldest stories of science. Long before telescopes, people "
          "watched the night sky, named the constellations, and tracked the wandering planets across the "
          "seasons. In this essay we look at how")
N_CTX = 512
_PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
_EVAL = re.compile(r"(?<!prompt )eval time =\s*([\d.]+) ms /\s*(\d+) runs")


def llama_completion(exe: Path, model: Path, threads: int, max_tokens: int) -> dict[str, Any]:
    cmd = [exe, "-m", model, "-p", PROMPT, "-n", max_tokens, "--temp", "0", "-t", threads, "-c", N_CTX,
           "-no-cnv", "--no-display-prompt", "--log-colors", "off"]
    p = run_measured(cmd).check("llama-completion")
    log = p.stderr + p.stdout
    pe, ev = _PROMPT_EVAL.search(log), _EVAL.search(log)
    if not pe or not ev:
        raise BenchError(f"llama-completion printed no perf lines:\n{log[-2000:]}")
    pe_ms, n_prompt = float(pe.group(1)), int(pe.group(2))
    ev_ms, n_eval = float(ev.group(1)), int(ev.group(2))
    return {"n_prompt": n_prompt, "n_gen": n_eval + 1, "ttft_ms": pe_ms, "prompt_tps": 1000 * n_prompt / pe_ms,
            "gen_tps": 1000 * n_eval / ev_ms, "text": p.stdout}


def llama_cpp_python(py: Path, model: Path, threads: int, max_tokens: int) -> dict[str, Any]:
    job = {"model_path": str(model), "prompt": PROMPT, "max_tokens": max_tokens, "n_ctx": N_CTX,
           "threads": threads}
    p = run_measured([py, REPO / "benchmarks" / "lcpp_worker.py", json.dumps(job)]).check("llama-cpp-python")
    return json.loads(p.stdout.strip().splitlines()[-1])


def hoshikage(model: Path, threads: int, max_tokens: int) -> dict[str, Any]:
    job = {"model_path": str(model), "prompt": PROMPT, "max_tokens": max_tokens, "n_ctx": N_CTX,
           "threads": threads}
    p = run_measured(python_cmd("benchmarks.worker", "ar", json.dumps(job)), env=hk_env()).check("hoshikage ar")
    return json.loads(p.stdout.strip().splitlines()[-1])


def llama_bench(exe: Path, model: Path, threads: int, quick: bool) -> dict[str, Any]:
    pp, tg, reps = (32, 16, 2) if quick else (128, 64, 5)
    p = run_measured([exe, "-m", model, "-p", pp, "-n", tg, "-t", threads, "-r", reps, "-o", "json"])
    p.check("llama-bench")
    out = {}
    for row in json.loads(p.stdout):
        key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        out[key] = {"avg_tps": row["avg_ts"], "stddev_tps": row["stddev_ts"], "reps": reps}
    return out


def run_ar(model: Path, threads: int, reps: int, max_tokens: int, manifest: dict, lcpp_python: Path | None,
           quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    completion = tool(manifest, "llama-completion")
    sides: list[tuple[str, Callable[[], dict]]] = [("hoshikage", lambda: hoshikage(model, threads, max_tokens))]
    if completion:
        sides.append(("llama_completion", lambda: llama_completion(completion, model, threads, max_tokens)))
    if lcpp_python:
        sides.append(("llama_cpp_python", lambda: llama_cpp_python(lcpp_python, model, threads, max_tokens)))
    rows = alternate(reps, sides, log)
    for i, row in enumerate(rows):
        h = row["hoshikage"]
        if "llama_completion" in row:  # its stdout is the answer, plus an end marker at EOS
            row["llama_completion"]["text_matches"] = row["llama_completion"]["text"].startswith(h["text"])
        if "llama_cpp_python" in row:  # recorded, not asserted: this is not a parity claim
            same = row["llama_cpp_python"]["text"] == h["text"]
            row["llama_cpp_python"]["text_matches"] = same
            if not same:
                log(f"    note: rep {i + 1}: llama-cpp-python's text differs from Hoshikage's")
    figures = ("ttft_ms", "prompt_tps", "gen_tps")
    result: dict[str, Any] = {"prompt": PROMPT, "max_tokens": max_tokens, "threads": threads,
                              "n_prompt": rows[0]["hoshikage"]["n_prompt"], "n_gen": rows[0]["hoshikage"]["n_gen"]}
    for name, _ in sides:
        result[name] = {f: summary([r[name][f] for r in rows]) for f in figures}
        for r in rows:
            r[name].pop("text", None)
    if lcpp_python:
        result["llama_cpp_python"]["text_matches_every_rep"] = all(r["llama_cpp_python"]["text_matches"]
                                                                   for r in rows)
    if completion:
        result["llama_completion"]["text_matches_every_rep"] = all(r["llama_completion"]["text_matches"]
                                                                   for r in rows)
    result["ratios"] = {}
    for other in ("llama_cpp_python", "llama_completion"):
        if other in result:
            result["ratios"][other] = {f: summary([ratio(r["hoshikage"][f], r[other][f]) for r in rows])
                                       for f in figures}
    result["reps"] = rows
    result["llama_cpp_python_note"] = (None if lcpp_python else
                                       f"skipped: no llama-cpp-python venv at {lcpp_env.venv_dir()} "
                                       "(--quick does not build it; `make bench` or "
                                       "`python -m benchmarks.lcpp_env` does)")
    bench = tool(manifest, "llama-bench")
    result["llama_bench"] = llama_bench(bench, model, threads, quick) if bench else None
    for other, r in result["ratios"].items():
        log(f"    gen tok/s ratio vs {other}: {r['gen_tps']['median']:.3f}")
    return result
