"""Diffusion: ``hoshikage generate`` against ``llama-diffusion-cli``, same flags, same GGUF.

Each configuration runs in three parts:

1. **Token identity** (also the warm-up: page cache, CPU frequency): one process runs
   llama.cpp's own ``diffusion_generate`` and Hoshikage's numpy loop on the *same* Context,
   so both read identical logits, and compares the whole canvases. A difference raises.
2. **Timed repetitions**: the reference command and Hoshikage's command alternate, each a
   process of its own (peak RSS per process: the reference's C++ binary against Hoshikage's
   Python with numpy). Each repetition also checks that both printed the same canvas text.
3. Figures per side and ratios per repetition (Hoshikage ÷ reference), then medians.

The reference is ``llama-diffusion-cli`` itself, except with CFG on: that tool parses
``--diffusion-cfg-scale`` but never uses it, so CFG runs go through ``native/ref_driver.c``,
a Python-free program calling the same ``diffusion_generate`` (built here on first use).
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .common import REPO, BenchError, alternate, hk_env, python_cmd, ratio, run_measured, summary, tool

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
DRIVER_SRC = REPO / "benchmarks" / "native" / "ref_driver.c"
_TOTAL = re.compile(r"total time: ([\d.]+)ms, time per step: ([\d.]+)ms, sampling time per step: ([\d.]+)ms")


@dataclass(frozen=True)
class DiffConfig:
    """One comparison. ``schedule`` is "block" (uses block_length) or "timestep" (uses eps)."""

    name: str
    model: str  # a preset of hoshikage.testing.diffusion_models
    canvas: int  # -ub: the whole canvas, prompt included
    steps: int
    schedule: str = "block"
    block_length: int = 32
    eps: float = 0.001
    algorithm: int = 4  # CONFIDENCE_BASED
    top_k: int = 40
    top_p: float = 1.0
    temperature: float = 0.0
    cfg_scale: float = 0.0
    seed: int = 42
    role: str = ""  # "rss" / "rss_cfg": the configurations the peak-RSS keys are read from

    @property
    def full_vocab(self) -> bool:
        return self.top_k == 0 and self.top_p >= 1.0

    def label(self) -> str:
        sched = f"block {self.block_length}" if self.schedule == "block" else f"timestep eps {self.eps:g}"
        alg = {0: "ORIGIN", 1: "ENTROPY", 2: "MARGIN", 3: "RANDOM", 4: "CONFIDENCE"}[self.algorithm]
        filters = ([f"top-k {self.top_k}"] if self.top_k else []) + ([f"top-p {self.top_p:g}"] if self.top_p < 1 else [])
        vocab = " ".join(filters) or "full vocab"
        temp = f" temp {self.temperature:g}" if self.temperature else ""
        cfg = f", cfg {self.cfg_scale:g}" if self.cfg_scale else ""
        return f"{self.model} c{self.canvas} s{self.steps} {sched} {alg} {vocab}{temp}{cfg}"


def _cfg(name, model, canvas, steps, **kw) -> DiffConfig:
    return DiffConfig(name, model, canvas, steps, **kw)


def full_configs() -> list[DiffConfig]:
    """The matrix of ``make bench``: one factor at a time around llada-bench c256 s32.

    Steps scale the time linearly and leave the per-step figures alone, so the steps sweep
    (32/64/128) runs on the 128 canvas only, the 256 canvas uses 32 steps and the 512 canvas
    (there for peak RSS) 16. On 2 busy cores the whole matrix still takes about two hours.
    """
    L, D, T = "llada-bench", "dream-bench", "llada-tiny"
    return [
        _cfg("llada-c128-s32", L, 128, 32),
        _cfg("llada-c128-s64", L, 128, 64),
        _cfg("llada-c128-s128", L, 128, 128),
        _cfg("llada-c256-s32", L, 256, 32),
        _cfg("llada-c256-s32-full", L, 256, 32, top_k=0),
        _cfg("llada-c256-s32-timestep-entropy-full", L, 256, 32, schedule="timestep", algorithm=1, top_k=0),
        _cfg("llada-c512-s16", L, 512, 16, role="rss"),
        _cfg("llada-c512-s16-cfg", L, 512, 16, cfg_scale=1.0, role="rss_cfg"),
        _cfg("dream-c256-s32-timestep", D, 256, 32, schedule="timestep", algorithm=1, temperature=0.2,
             top_p=0.95, top_k=0),
        # The three reference points: a 96-wide model with a 49k vocabulary, canvas 256,
        # 64 steps -- small enough that sampling is a large share of a step.
        _cfg("tiny-llada-c256-s64", T, 256, 64),
        _cfg("tiny-llada-c256-s64-full", T, 256, 64, top_k=0),
        _cfg("tiny-llada-c256-s64-timestep-entropy-full", T, 256, 64, schedule="timestep", algorithm=1, top_k=0),
    ]


def quick_configs() -> list[DiffConfig]:
    """``make bench-quick``: the same kinds of comparison on the tiny test models."""
    L, D = "llada-tiny", "dream-tiny"
    return [
        _cfg("tiny-llada-c64-s16", L, 64, 16, role="rss"),
        _cfg("tiny-llada-c64-s16-full", L, 64, 16, top_k=0),
        _cfg("tiny-llada-c64-s16-timestep-entropy-full", L, 64, 16, schedule="timestep", algorithm=1, top_k=0),
        _cfg("tiny-llada-c64-s16-cfg", L, 64, 16, cfg_scale=1.0, role="rss_cfg"),
        _cfg("tiny-dream-c64-s16-timestep", D, 64, 16, schedule="timestep", algorithm=1, temperature=0.2,
             top_p=0.95, top_k=0),
    ]


# ---------------------------------------------------------------------------------------------
# commands


def _shared_flags(c: DiffConfig, model: Path, threads: int) -> list[str]:
    sched = (["--diffusion-block-length", str(c.block_length)] if c.schedule == "block"
             else ["--diffusion-eps", repr(c.eps)])
    return ["-m", str(model), "-p", PROMPT, "-ub", str(c.canvas), "--diffusion-steps", str(c.steps), *sched,
            "--diffusion-algorithm", str(c.algorithm), "--temp", repr(c.temperature), "--top-k", str(c.top_k),
            "--top-p", repr(c.top_p), "--seed", str(c.seed), "-t", str(threads)]


def reference_cli(c: DiffConfig, model: Path, threads: int, manifest: dict) -> dict[str, Any]:
    cli = tool(manifest, "llama-diffusion-cli")
    if cli is None:
        raise BenchError("llama-diffusion-cli is not in the build manifest; run build_llama.py")
    cmd = [str(cli), *_shared_flags(c, model, threads), "--no-log-prefix", "--no-log-timestamps",
           "--log-colors", "off"]
    p = run_measured(cmd).check("llama-diffusion-cli")
    total_ms, sampling, after = parse_reference_log(p.stdout + p.stderr)
    return {**_ref_figures(c, total_ms, sampling), "peak_rss_mb": p.peak_rss_mb, "wall_s": p.wall_s,
            "_after": after}


def parse_reference_log(log: str) -> tuple[float, float, str]:
    """(total ms, sampling ms per step, the output after the timing line) from llama.cpp's log.

    diffusion_generate logs ``\ntotal time: ...\n``, then llama-diffusion-cli ``\n<canvas>\n``,
    so what follows the timing line is the canvas text, then a newline and any later log.
    """
    m = _TOTAL.search(log)
    if not m:
        raise BenchError(f"no 'total time' line in llama.cpp's output:\n{log[-2000:]}")
    rest = log[m.end():]
    if not rest.startswith("\n\n"):
        raise BenchError(f"unexpected output after the timing line: {rest[:200]!r}")
    return float(m.group(1)), float(m.group(3)), rest[2:]


def reference_driver(c: DiffConfig, model: Path, threads: int, manifest: dict, prompt_tokens: list[int]
                     ) -> dict[str, Any]:
    driver = build_driver(manifest)
    sched = 1 if c.schedule == "block" else 0
    eps = c.eps if c.schedule == "timestep" else 0.0
    block = c.block_length if c.schedule == "block" else 0
    cmd = [str(driver), str(model), str(threads), str(c.canvas), str(c.steps), str(c.algorithm), str(sched),
           repr(eps), str(block), repr(c.temperature), str(c.top_k), repr(c.top_p), str(c.seed),
           repr(c.cfg_scale), "0", "0", *map(str, prompt_tokens)]
    p = run_measured(cmd).check("ref_driver")
    m, total = _TOTAL.search(p.stdout + p.stderr), re.search(r"total_ms: ([\d.]+)", p.stdout)
    if not total or "\ntext:" not in p.stdout:
        raise BenchError(f"ref_driver printed no result:\n{p.stdout[-1000:]}\n{p.stderr[-1000:]}")
    total_ms, sampling = float(total.group(1)), float(m.group(3)) if m else None
    text = p.stdout.split("\ntext:", 1)[1][:-1]
    return {**_ref_figures(c, total_ms, sampling), "peak_rss_mb": p.peak_rss_mb, "wall_s": p.wall_s,
            "_after": text + "\n"}


def _ref_figures(c: DiffConfig, total_ms: float, sampling_ms_per_step: float | None) -> dict[str, Any]:
    per_step = total_ms / c.steps  # as llama.cpp divides: by the steps asked for
    return {"total_ms": total_ms, "ms_per_step": per_step, "sampling_ms_per_step": sampling_ms_per_step,
            "decode_ms_per_step": None if sampling_ms_per_step is None else per_step - sampling_ms_per_step}


def hoshikage_cli(c: DiffConfig, model: Path, threads: int) -> dict[str, Any]:
    cmd = python_cmd("hoshikage", "generate", *_shared_flags(c, model, threads), "--json")
    if c.cfg_scale:
        cmd += ["--diffusion-cfg-scale", repr(c.cfg_scale)]
    p = run_measured(cmd, env=hk_env()).check("hoshikage generate")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"hoshikage generate printed no JSON:\n{p.stdout[-1000:]}\n{p.stderr[-2000:]}")
    out = json.loads(lines[-1])
    t = out["timings"]
    total_ms = 1000 * t["generation_seconds"]
    guidance = t.get("guidance_seconds", 0.0)
    # llama.cpp's "sampling time" starts after the CFG combination, so (total - sampling) holds
    # its decodes and its combination; the CFG combination is put on the same side here.
    return {"total_ms": total_ms, "ms_per_step": total_ms / c.steps,
            "sampling_ms_per_step": 1000 * t["sampling_seconds"] / c.steps,
            "decode_ms_per_step": 1000 * (t["decode_seconds"] + guidance) / c.steps,
            "guidance_ms_per_step": 1000 * guidance / c.steps,
            "peak_rss_mb": p.peak_rss_mb, "wall_s": p.wall_s, "n_prompt": out["prompt_tokens"],
            "_text": out["canvas_text"]}


def build_driver(manifest: dict) -> Path:
    """Compile ref_driver.c against the build in use (cached next to it; seconds)."""
    bin_dir = Path(manifest["library"]).parent
    out = bin_dir.parent / "bench" / "ref_driver"
    if out.is_file() and out.stat().st_mtime >= DRIVER_SRC.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = Path(manifest["source_dir"])
    cmd = ["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", f"-I{src / 'include'}",
           f"-I{src / 'ggml' / 'include'}", str(DRIVER_SRC), "-o", str(out), f"-L{bin_dir}", "-lllama",
           "-lhoshikage-diffusion-ref", f"-Wl,-rpath,{bin_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"compiling {DRIVER_SRC.name} failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return out


# ---------------------------------------------------------------------------------------------
# one configuration


def identity_check(c: DiffConfig, model: Path, threads: int) -> dict[str, Any]:
    """Both loops on one Context in one process (benchmarks.worker); raises on any difference."""
    job = {**asdict(c), "model_path": str(model), "threads": threads, "prompt": PROMPT}
    p = run_measured(python_cmd("benchmarks.worker", "identity", json.dumps(job)), env=hk_env())
    p.check("token-identity check")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if not out["identical"]:
        raise BenchError(f"{c.name}: Hoshikage and llama.cpp's diffusion_generate differ "
                         f"(first difference at canvas position {out['first_difference']}): {out}")
    return out


def run_config(c: DiffConfig, model: Path, threads: int, reps: int, manifest: dict,
               log: Callable[[str], None]) -> dict[str, Any]:
    log(f"  {c.name}: {c.label()}")
    ident = identity_check(c, model, threads)
    log(f"    token identity: {ident['canvas']} canvas tokens identical ({ident['n_prompt']} prompt)")
    prompt_tokens = ident["prompt_tokens"]

    def ref() -> dict:
        if c.cfg_scale:
            return reference_driver(c, model, threads, manifest, prompt_tokens)
        return reference_cli(c, model, threads, manifest)

    rows = alternate(reps, [("reference", ref), ("hoshikage", lambda: hoshikage_cli(c, model, threads))], log)
    n_gen = c.canvas - ident["n_prompt"]
    for i, row in enumerate(rows):
        r, h = row["reference"], row["hoshikage"]
        if h["n_prompt"] != ident["n_prompt"]:
            raise BenchError(f"{c.name}: hoshikage generate saw {h['n_prompt']} prompt tokens, "
                             f"the identity check {ident['n_prompt']}")
        if not r.pop("_after").startswith(h.pop("_text") + "\n"):
            raise BenchError(f"{c.name} rep {i + 1}: the reference and Hoshikage printed different canvases")
        for side in (r, h):
            side["tokens_per_s"] = n_gen / (side["total_ms"] / 1000)
    figures = ("total_ms", "ms_per_step", "decode_ms_per_step", "sampling_ms_per_step", "tokens_per_s",
               "peak_rss_mb")
    result: dict[str, Any] = {
        "config": asdict(c), "label": c.label(), "generated_tokens": n_gen, "n_prompt": ident["n_prompt"],
        "reference_tool": "ref_driver (diffusion_generate; llama-diffusion-cli ignores cfg)" if c.cfg_scale
        else "llama-diffusion-cli",
        "token_identity": {"checked": True, "identical": True, "canvas_tokens": ident["canvas"]},
        "text_identical_every_rep": True, "reps": rows,
    }
    for side in ("reference", "hoshikage"):
        result[side] = {f: summary([row[side].get(f) for row in rows]) for f in figures}
    result["ratios"] = {
        "tokens_per_s": summary([ratio(r["hoshikage"]["tokens_per_s"], r["reference"]["tokens_per_s"])
                                 for r in rows]),
        "sampling_ms_per_step": summary([ratio(r["hoshikage"]["sampling_ms_per_step"],
                                               r["reference"]["sampling_ms_per_step"]) for r in rows]),
        "decode_ms_per_step": summary([ratio(r["hoshikage"]["decode_ms_per_step"],
                                             r["reference"]["decode_ms_per_step"]) for r in rows]),
        "peak_rss": summary([ratio(r["hoshikage"]["peak_rss_mb"], r["reference"]["peak_rss_mb"]) for r in rows]),
    }
    shares = [ratio(r["reference"]["sampling_ms_per_step"], r["reference"]["ms_per_step"]) for r in rows]
    result["reference_sampling_share"] = summary(shares)
    log(f"    tokens/s ratio {result['ratios']['tokens_per_s']['median']:.3f}, sampling ratio "
        f"{_or_dash(result['ratios']['sampling_ms_per_step']['median'])}, peak RSS ratio "
        f"{result['ratios']['peak_rss']['median']:.3f}")
    return result


def _or_dash(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def headline(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The diffusion keys of results.json, each with the configuration it was read from."""
    def worst(rows, key, pick):
        rows = [r for r in rows if r["ratios"][key]["median"] is not None]
        if not rows:
            return None, None
        r = pick(rows, key=lambda r: r["ratios"][key]["median"])
        return r["ratios"][key]["median"], r["config"]["name"]

    heavy = [r for r in results if (r["reference_sampling_share"]["median"] or 0) >= 0.4]
    full = [r for r in results if DiffConfig(**r["config"]).full_vocab]
    out: dict[str, Any] = {}
    src: dict[str, Any] = {}
    out["tokens_per_s_ratio_vs_reference"], src["tokens_per_s_ratio_vs_reference"] = worst(
        results, "tokens_per_s", min)
    out["tokens_per_s_ratio_vs_reference_sampling_heavy"], src["tokens_per_s_ratio_vs_reference_sampling_heavy"] = \
        worst(heavy, "tokens_per_s", min)
    out["sampling_ms_per_step_ratio_vs_reference"], src["sampling_ms_per_step_ratio_vs_reference"] = worst(
        full, "sampling_ms_per_step", max)
    for key, role in (("peak_rss_ratio_vs_reference", "rss"), ("peak_rss_ratio_vs_reference_cfg", "rss_cfg")):
        rows = [r for r in results if r["config"]["role"] == role]
        out[key] = rows[0]["ratios"]["peak_rss"]["median"] if rows else None
        src[key] = rows[0]["config"]["name"] if rows else None
    out["_from"] = src
    out["_sampling_heavy_configs"] = [r["config"]["name"] for r in heavy]
    return out
