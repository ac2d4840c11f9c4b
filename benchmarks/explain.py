"""Why a target was missed: the split measured in the run, and a profile of Hoshikage.

    python -m benchmarks.explain [results.json]    # explain every missed key, re-render RESULTS.md

For each missed key this reads the configuration the key came from, states by how much it
was missed and where the time (or memory) goes on each side, and runs Hoshikage once more on
that configuration under cProfile (one sampling thread, so the sampler's own functions show
up: with more threads cProfile only sees the main thread waiting for the workers). Peak-RSS
misses are backed by the RSS of a process that only imports hoshikage and loads libllama.
``run.py`` calls :func:`explain` at the end of a full run.
"""
from __future__ import annotations

import cProfile
import json
import pstats
import sys
from pathlib import Path
from typing import Any, Callable

from . import ar, diffusion
from .common import REPO, hk_env, run_measured, write_json

HERE = Path(__file__).resolve().parent
TOP = 14

# What the mechanism is, by what dominates the configuration (see docs/benchmarks.md).
MECHANISM = {
    "entropy": "ENTROPY ranks positions by proven bounds and computes exact confidences only where they decide "
               "the cut (docs/diffusion.md), so most of its sampling time is the chain itself: dist's glibc-exact "
               "expf over every candidate and its sums, and with top-p the sort of the whole vocabulary -- "
               "several numpy passes where the C makes one loop. The profile shows which.",
    "decode": "Both sides spend nearly all of the step in the same llama_decode over the same canvas (same "
              "library, same threads); sampling is a few percent of the step, so the ratio is the decode's "
              "run-to-run noise around 1.0 plus the sampling difference in the split above.",
    "sampling": "Sampling costs Hoshikage a fixed number of numpy passes per vocabulary entry (glibc's expf "
                "reproduced in float64, a pairwise-then-checked double sum) plus per-row Python overhead, which "
                "weighs more at a 49k vocabulary; the C loop makes one pass.",
    "rss": "Hoshikage's process carries the Python interpreter, numpy, cffi and the wrapper (measured below: "
           "a process that only imports hoshikage and loads libllama); the C tool has none of it. Beyond "
           "that both hold the same model and llama.cpp's logits buffer.",
    "rss_cfg": "With CFG llama.cpp's loop copies the whole conditional logits buffer (canvas x n_vocab "
               "floats: 247 MiB at canvas 512 with LLaDA's 126,464 vocabulary) before the second pass; "
               "Hoshikage reads only the rows the step needs, so it saves that copy less the interpreter's own "
               "footprint (the import-only figure below). What is left is held by llama.cpp on both sides: the "
               "model's mapped pages, the graph's logits tensor and the logits output buffer (each canvas x "
               "n_vocab floats). Reaching 0.8 would mean dropping one of those, and llama.h offers no way: a "
               "model without KV memory runs llama_encode, which always outputs every row.",
    "ar": "Per token both sides run one llama_decode and llama.cpp's sampler chain in C; Hoshikage adds a "
          "Python iteration (token to text, stop strings, the streaming generator).",
}


def _top(prof: cProfile.Profile, n: int = TOP) -> list[dict[str, Any]]:
    """The ``n`` functions with the most time of their own."""
    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
        where = file
        for base in (str(REPO) + "/", "/site-packages/"):
            if base in where:
                where = where.split(base, 1)[1]
        name = func if file == "~" else f"{where}:{line}({func})"
        out.append({"function": name, "calls": nc, "own_s": round(tt, 4), "cum_s": round(ct, 4)})
    return out


def profile_diffusion_config(name: str, *, steps: int | None = None, threads: int = 1) -> dict[str, Any]:
    """One ``hoshikage.generate`` of a benchmark configuration under cProfile."""
    import hoshikage as hk
    from hoshikage.testing.diffusion_models import ensure_test_model

    configs = {c.name: c for c in diffusion.full_configs() + diffusion.quick_configs()}
    c = configs[name]
    steps = steps or c.steps
    opts = {"steps": steps, "algorithm": c.algorithm, "eps": c.eps, "block_length": c.block_length,
            "schedule": hk.Schedule.BLOCK_BASED if c.schedule == "block" else hk.Schedule.TIMESTEP_BASED,
            "cfg_scale": c.cfg_scale}
    with hk.Model(ensure_test_model(c.model)) as model:
        messages = [{"role": "user", "content": diffusion.PROMPT}]
        n_prompt = len(hk.prepare_prompt(model, messages=messages))
        prof = cProfile.Profile()
        prof.enable()
        out = hk.generate(model, messages=messages, max_tokens=c.canvas - n_prompt, temperature=c.temperature,
                          top_k=c.top_k, top_p=c.top_p, seed=c.seed, diffusion=opts, adjust=False,
                          n_ctx=c.canvas, n_threads=threads)
        prof.disable()
    t = out.timings
    return {"what": f"{c.label()}, {steps} steps, {threads} thread(s)",
            "decode_ms_per_step": 1000 * (t.decode_seconds + t.guidance_seconds) / steps,
            "sampling_ms_per_step": 1000 * t.sampling_seconds / steps, "top": _top(prof)}


def profile_ar(*, threads: int = 1, max_tokens: int = 128) -> dict[str, Any]:
    """One streamed greedy generation of the AR benchmark under cProfile."""
    import hoshikage as hk

    with hk.Model(hk.smollm2_path()) as model, hk.Context(model, n_ctx=ar.N_CTX, n_threads=threads) as ctx:
        hk.generate(model, ar.PROMPT, max_tokens=8, temperature=0, context=ctx)  # warm-up
        prof = cProfile.Profile()
        prof.enable()
        for _ in hk.generate(model, ar.PROMPT, max_tokens=max_tokens, temperature=0, context=ctx, stream=True):
            pass
        prof.disable()
    return {"what": f"SmolLM2, {max_tokens} greedy tokens, {threads} thread(s)", "top": _top(prof)}


def import_only_rss_mb() -> float | None:
    """Peak RSS (MB) of a Python process that imports hoshikage and loads libllama, nothing else.

    Read from the child's own VmHWM: ru_maxrss would carry the parent's peak across exec.
    """
    code = ("import hoshikage, hoshikage._ffi as f; f.lib(); "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))")
    p = run_measured([sys.executable, "-c", code], env=hk_env())
    try:
        return int(p.stdout.strip().splitlines()[-1]) / 1024 if p.returncode == 0 else None
    except (ValueError, IndexError):
        return None


def _row(results: dict, name: str | None) -> dict | None:
    for r in (results.get("diffusion") or {}).get("configs", []):
        if r["config"]["name"] == name:
            return r
    return None


def _med(d: dict | None, key: str) -> float | None:
    v = (d or {}).get(key)
    return v.get("median") if isinstance(v, dict) else v


def _split(r: dict) -> str:
    ref, hk = r["reference"], r["hoshikage"]
    f = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    return (f"per step, llama.cpp {f(_med(ref, 'ms_per_step'))} ms = decode {f(_med(ref, 'decode_ms_per_step'))} + "
            f"sampling {f(_med(ref, 'sampling_ms_per_step'))}; Hoshikage {f(_med(hk, 'ms_per_step'))} ms = decode "
            f"{f(_med(hk, 'decode_ms_per_step'))} + sampling {f(_med(hk, 'sampling_ms_per_step'))} (medians)")


def _mechanism(r: dict, key: str) -> str:
    c = r["config"]
    if key.startswith("diffusion.peak_rss"):
        return MECHANISM["rss_cfg" if c["cfg_scale"] else "rss"]
    if c["algorithm"] == 1:
        return MECHANISM["entropy"]
    share = _med(r, "reference_sampling_share") or 0
    return MECHANISM["sampling"] if key.startswith("diffusion.sampling") or share >= 0.2 else MECHANISM["decode"]


def explain(results: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """{key: explanation} for every missed target; also stored by the caller in results.json."""
    out: dict[str, Any] = {}
    profiled: dict[str, Any] = {}
    rss_base = None
    for key, t in results.get("targets", {}).items():
        if t["met"] is not False:
            continue
        bound = float(t["target"].split()[1])
        e: dict[str, Any] = {"value": t["value"], "target": t["target"],
                             "by": f"{abs(t['value'] - bound) / bound:.0%} {'below' if '>' in t['target'] else 'above'} "
                                   f"the target"}
        try:
            if key.startswith("diffusion."):
                name = ((results.get("diffusion") or {}).get("_from") or {}).get(key.split(".", 1)[1])
                r = _row(results, name)
                if r is None:
                    continue
                e["config"], e["split"], e["why"] = r["label"], _split(r), _mechanism(r, key)
                if key.startswith("diffusion.peak_rss"):
                    rss_base = rss_base if rss_base is not None else import_only_rss_mb()
                    e["rss"] = {"reference_mb": r["reference"]["peak_rss_mb"],  # summaries
                                "hoshikage_mb": r["hoshikage"]["peak_rss_mb"], "import_only_mb": rss_base}
                else:
                    if name not in profiled:
                        log(f"    profiling {name} (1 sampling thread)")
                        profiled[name] = profile_diffusion_config(name, steps=min(r["config"]["steps"], 16))
                    e["profile"] = profiled[name]
            elif key.startswith("ar."):
                e["why"] = MECHANISM["ar"]
                if "ar" not in profiled:
                    log("    profiling the autoregressive generation")
                    profiled["ar"] = profile_ar(threads=results.get("threads", 1))
                e["profile"] = profiled["ar"]
            else:
                e["why"] = "see the server section's table"
        except Exception as exc:  # an explanation must never lose the measured results
            e["error"] = f"{type(exc).__name__}: {exc}"
        out[key] = e
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else HERE / "results.json"
    results = json.loads(path.read_text())
    results["explanations"] = explain(results)
    write_json(path, results)
    from .report import write_report

    write_report(results, path.parent)
    print(f"explained {len(results['explanations'])} missed target(s) in {path.parent / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
