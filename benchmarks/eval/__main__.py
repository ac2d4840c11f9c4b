"""``make eval`` / ``python -m benchmarks.eval``: accuracy of the trained diffusion models on
their tasks, for a grid of steps x algorithm x schedule, reference and corrected mode, with
llama-diffusion-cli on the same prompts side by side.

Per task and configuration it reports accuracy, forwards (model calls) per answer token and
answer tokens per second, writes ``benchmarks/eval/results.json`` and a plot of accuracy
against forwards per answer token (``benchmarks/eval/accuracy_vs_forwards.png``). The fewer-
forwards grid (fixed steps and thresholds 0.5-0.99, with and without early stop) gives the
Pareto plot per task and model (``benchmarks/eval/pareto.png``) and the ``fast_decoding``
figures (benchmarks/eval/fast.py).

    python -m benchmarks.eval                 # the default grid (about 25 min on 2 busy cores)
    python -m benchmarks.eval --quick         # 10 prompts per task, a few configurations
    python -m benchmarks.eval --pareto        # only the fewer-forwards grid
    python -m benchmarks.eval --n 0 --full    # every prompt, the whole grid
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .runners import CliRunner, HoshikageRunner, with_flags
from .suite import EVAL_DIR, MODELS_JSON, load_lines, load_models, task_name

from hoshikage.sampling.params import Algorithm

# --diffusion-algorithm codes by the grid's short names ("CONFIDENCE" for CONFIDENCE_BASED...).
ALGS = {a.name.removesuffix("_BASED"): str(a.value) for a in Algorithm}
FULL_GRID_ALGS = ("CONFIDENCE", "ENTROPY", "MARGIN")
DEFAULT = "default"  # a Config's algorithm or schedule: the model's own (its cli_args)


def algorithm_of(args: tuple[str, ...] | list[str]) -> str:
    """The short name of the algorithm ``args`` run: their --diffusion-algorithm, else
    llama-diffusion-cli's default (CONFIDENCE_BASED)."""
    if "--diffusion-algorithm" not in args:
        return "CONFIDENCE"
    code = args[list(args).index("--diffusion-algorithm") + 1]
    names = {v: k for k, v in ALGS.items()}
    if code not in names:
        raise ValueError(f"--diffusion-algorithm {code!r}: not one of {', '.join(sorted(names))}")
    return names[code]


@dataclass(frozen=True)
class Config:
    """One point of the grid; ``frac`` is the share of the model's default steps."""
    frac: float
    algorithm: str = DEFAULT   # DEFAULT (the model's own) or a key of ALGS
    schedule: str = DEFAULT    # DEFAULT or "other" (block <-> timestep)
    corrected: bool = False
    tools: tuple[str, ...] = ("hoshikage",)
    threshold: float = 0.0   # --diffusion-threshold (0: off)
    early_stop: bool = False  # --diffusion-early-stop

    def label(self, steps: int, sched: str, algorithm: str) -> str:
        fast = (f" t{self.threshold:g}" if self.threshold else "") + (" es" if self.early_stop else "")
        return f"s{steps} {sched} {algorithm}{' corrected' if self.corrected else ''}{fast}"


THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def pareto_grid(quick: bool) -> list[Config]:
    """Fixed steps (the steps sweep) and thresholds at the default steps, each without and with
    early stop; reference mode, the default algorithm and schedule."""
    fracs, thresholds = ((1.0, 0.25), (0.5, 0.9, 0.99)) if quick else ((1.0, 0.5, 0.25, 0.125), THRESHOLDS)
    out = [Config(f, early_stop=True) for f in fracs]
    out += [Config(1.0, threshold=t, early_stop=es) for t in thresholds for es in (False, True)]
    return out


def grid(full: bool, quick: bool, table: bool = False, pareto: bool = False) -> list[Config]:
    fracs = (1.0, 0.5, 0.25, 0.125)
    both = ("hoshikage", "llama-diffusion-cli")
    if table:  # the accuracy table: default steps and 1/8 of them, both tools
        return [Config(1.0, tools=both), Config(0.125, tools=both)]
    if pareto:  # the fixed-step sweep without early stop, then the fewer-forwards grid
        return [Config(f, tools=both if f == 1.0 else ("hoshikage",)) for f in fracs] + pareto_grid(quick)
    if quick:
        return [Config(1.0, tools=both), Config(0.125, tools=both), Config(1.0, corrected=True)] + pareto_grid(True)
    out = [Config(f, tools=both if f in (1.0, 0.125) else ("hoshikage",)) for f in fracs]
    out += [Config(f, corrected=True) for f in (1.0, 0.125)]
    out += [Config(f, "ENTROPY", corrected=True) for f in (1.0, 0.125)]
    out += [Config(f, schedule="other") for f in (1.0, 0.125)]
    out += pareto_grid(False)
    if full:
        for f in fracs:  # run() skips those that repeat a row's flags (the model's own algorithm)
            for alg in FULL_GRID_ALGS:
                for sched in (DEFAULT, "other"):
                    for corr in (False, True):
                        out.append(Config(f, alg, sched, corr))
    return out


def config_args(base: tuple[str, ...], c: Config) -> tuple[list[str], int, str]:
    """The flags of ``c`` on top of the model's defaults: (args, steps, schedule name). The
    model's own algorithm stays unless ``c`` names one."""
    i = base.index("--diffusion-steps")
    steps0 = int(base[i + 1])
    block = "--diffusion-block-length" in base
    ub = int(base[base.index("-ub") + 1])
    use_block = block != (c.schedule == "other")
    steps = max(1, round(steps0 * c.frac))
    sets: dict[str, str | None] = {} if c.algorithm == DEFAULT else {"--diffusion-algorithm": ALGS[c.algorithm]}
    if use_block:
        bl = base[base.index("--diffusion-block-length") + 1] if block else "32"
        n_blocks = ub // int(bl)
        steps = max(n_blocks, -(-steps // n_blocks) * n_blocks)  # a multiple of the block count
        sets.update({"--diffusion-block-length": bl, "--diffusion-eps": None})
    else:
        eps = base[base.index("--diffusion-eps") + 1] if not block else "0.001"
        sets.update({"--diffusion-eps": eps, "--diffusion-block-length": None})
    sets["--diffusion-steps"] = str(steps)
    if c.corrected:
        sets["--diffusion-corrected"] = ""
    if c.threshold:
        sets["--diffusion-threshold"] = f"{c.threshold:g}"
    if c.early_stop:
        sets["--diffusion-early-stop"] = ""
    return with_flags(base, sets), steps, ("block" if use_block else "timestep")


def flag_set(args: tuple[str, ...] | list[str]) -> frozenset:
    """``args`` as a set of (flag, value) pairs: equal for the same flags in any order."""
    args = list(args)
    return frozenset((a, args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else "")
                     for i, a in enumerate(args) if a.startswith("-"))


@dataclass
class Tally:
    ok: int = 0
    n: int = 0
    forwards: int = 0
    tokens: int = 0
    seconds: float = 0.0
    canvases: list = field(default_factory=list)
    answers: list = field(default_factory=list)  # (answer text, accepted) per prompt

    def figures(self) -> dict:
        return {"accuracy": self.ok / self.n if self.n else None, "n": self.n,
                "forwards_per_answer_token": self.forwards / self.tokens if self.tokens else None,
                "answer_tokens_per_s": self.tokens / self.seconds if self.seconds else None,
                "forwards": self.forwards, "answer_tokens": self.tokens, "seconds": round(self.seconds, 4),
                "answers": self.answers}


def fast_decoding_grid() -> list[Config]:
    """What the ``fast_decoding`` figures need (benchmarks/eval/fast.py): the default steps with
    both tools, with early stop, and each threshold with early stop."""
    return ([Config(1.0, tools=("hoshikage", "llama-diffusion-cli")), Config(1.0, early_stop=True)]
            + [Config(1.0, threshold=t, early_stop=True) for t in THRESHOLDS])


def run(args, configs: list[Config] | None = None) -> dict:
    """Every model of ``args.models_json`` on its eval prompts, for ``configs`` (default: the grid
    the flags choose)."""
    from hoshikage.testing.diffusion_models import llama_tool

    models = load_models(Path(args.models_json))
    if args.model:
        models = [m for m in models if m.name in args.model]
    cli = None if args.no_cli else llama_tool("llama-diffusion-cli")
    if not args.no_cli and cli is None:
        print("note: llama-diffusion-cli is not built (python build_llama.py); Hoshikage only", file=sys.stderr)
    configs = configs or grid(args.full, args.quick, args.table, args.pareto)
    n = 10 if args.quick and args.n is None else (20 if args.n is None else args.n)
    results = {"machine": {"python": platform.python_version(), "cpus": _cpus(), "threads": args.threads},
               "prompts_per_task": n, "models": {}}
    for m in models:
        sets = {task_name(p): load_lines(p) for p in m.evals}
        if n:
            sets = {k: v[:n] for k, v in sets.items()}
        runners = {"hoshikage": HoshikageRunner(m.path, args.threads)}
        if cli is not None:
            runners["llama-diffusion-cli"] = CliRunner(m.path, args.threads, cli)
        rows, done = [], set()
        for c in configs:
            cargs, steps, sched = config_args(m.cli_args, c)
            alg, flags = algorithm_of(cargs), flag_set(cargs)
            for tool in c.tools:
                if tool not in runners or (tool, flags) in done:
                    continue  # (the --full grid names the model's own algorithm again)
                done.add((tool, flags))
                t0 = time.time()
                per = {}
                for task, lines in sets.items():
                    t = Tally()
                    for ln in lines:
                        a = runners[tool].answer(ln.prompt, cargs)
                        right = ln.score(a.text)
                        t.ok += right
                        t.answers.append([a.text, right])
                        t.n += 1
                        t.forwards += a.forwards
                        t.tokens += a.answer_tokens
                        t.seconds += a.seconds
                        t.canvases.append(a.canvas)
                    per[task] = t
                row = {"label": c.label(steps, sched, alg), "tool": tool, "steps": steps, "frac": c.frac,
                       "algorithm": alg, "schedule": sched, "corrected": c.corrected,
                       "threshold": c.threshold, "early_stop": c.early_stop, "args": cargs,
                       "tasks": {k: v.figures() for k, v in per.items()}, "wall_s": round(time.time() - t0, 1),
                       "_canvases": {k: v.canvases for k, v in per.items()}}
                rows.append(row)
                _print_row(m.name, row)
        _compare_tools(rows)
        for r in rows:
            r.pop("_canvases")
        retries = getattr(runners.get("llama-diffusion-cli"), "retries", None)
        for r in runners.values():
            r.close()
        results["models"][m.name] = {"path": str(m.path.relative_to(EVAL_DIR.parents[1])),
                                     "cli_args": list(m.cli_args), "rows": rows,
                                     "prompts": {k: [ln.prompt for ln in v] for k, v in sets.items()},
                                     "cli_reruns_for_lost_output": retries}
    return results


def _compare_tools(rows: list[dict]) -> None:
    """Mark, for configurations run by both tools, the share of prompts with identical canvases."""
    by = {}
    for r in rows:
        by.setdefault((r["label"]), {})[r["tool"]] = r
    for pair in by.values():
        if len(pair) == 2 and "_canvases" in pair["hoshikage"]:
            h, c = pair["hoshikage"], pair["llama-diffusion-cli"]
            same = [a == b for t in h["_canvases"] for a, b in zip(h["_canvases"][t], c["_canvases"][t])]
            h["identical_canvas_vs_cli"] = c["identical_canvas_vs_cli"] = sum(same) / len(same)
            print(f"  {h['label']}: identical canvases, hoshikage vs llama-diffusion-cli: "
                  f"{sum(same)}/{len(same)}", flush=True)


def _print_row(model: str, row: dict) -> None:
    cells = "  ".join(f"{k} {v['accuracy']:.0%} ({v['forwards_per_answer_token']:.2f} fw/tok, "
                      f"{v['answer_tokens_per_s']:.0f} tok/s)" for k, v in row["tasks"].items())
    print(f"{model:12s} {row['tool']:19s} {row['label']:32s} {cells}  [{row['wall_s']:.0f} s]", flush=True)


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.eval", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 prompts per task, 3 configurations")
    ap.add_argument("--full", action="store_true", help="the whole grid (every algorithm x schedule x mode)")
    ap.add_argument("--table", action="store_true",
                    help="only the default steps and 1/8 of them, both tools (with --n 0: the accuracy table)")
    ap.add_argument("--pareto", action="store_true",
                    help="only the steps sweep and the fewer-forwards grid (thresholds, early stop)")
    ap.add_argument("--n", type=int, help="prompts per task (default 20, --quick 10; 0 = all)")
    ap.add_argument("--model", action="append", help="only this model (repeatable)")
    ap.add_argument("--models-json", default=str(MODELS_JSON))
    ap.add_argument("--no-cli", action="store_true", help="skip llama-diffusion-cli")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per model call (default 1: ggml threads spin, and on a busy machine 2 were 3x slower)")
    ap.add_argument("--out", help="results file (default: results.json; --pareto: results-pareto.json)")
    ap.add_argument("--plot", help="the steps-sweep plot (default: accuracy_vs_forwards.png; --pareto, --table: none)")
    ap.add_argument("--pareto-plot", default=str(EVAL_DIR / "pareto.png"))
    args = ap.parse_args(argv)
    args.out = args.out or str(EVAL_DIR / ("results-pareto.json" if args.pareto else "results.json"))
    args.plot = args.plot or (None if args.pareto or args.table else str(EVAL_DIR / "accuracy_vs_forwards.png"))
    t0 = time.time()
    res = run(args)
    res["wall_s"] = round(time.time() - t0, 1)
    from .fast import fast_decoding
    res["fast_decoding"] = fast_decoding(res)
    print("fast decoding:", json.dumps({k: v for k, v in res["fast_decoding"].items() if k != "per_model"}))
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out} ({res['wall_s']:.0f} s)")
    try:
        from .plot import plot, plot_pareto
        if args.plot:
            plot(res, Path(args.plot))
            print(f"wrote {args.plot}")
        if plot_pareto(res, Path(args.pareto_plot)):
            print(f"wrote {args.pareto_plot}")
    except ImportError as exc:  # matplotlib is in the bench extra
        print(f"no plot: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
