"""``make bench``: Hoshikage side by side with llama.cpp's own tools and llama-cpp-python.

    python -m benchmarks.run              # everything (an hour or more on 2 cores)
    python -m benchmarks.run --quick      # tiny models, fewer repetitions (under 3 minutes)
    python -m benchmarks.run --quick --sections diffusion --models llada-tiny --reps 1 --out /tmp/b

Writes ``results.json`` (figures, the keys of the targets, the machine) and ``RESULTS.md``
(tables, plots under ``plots/``) into ``--out`` (default: this folder). Every ratio is taken
per repetition between runs made back to back, then summarised as median (min–max); see
docs/benchmarks.md for what each figure means. Exit status 1 if any comparison failed (the
token-identity assertion included); the report is written anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import ar, diffusion, lcpp_env, prefix_cache, prompt_cache, rpc, server
from .common import BenchError, machine_info, native_manifest, write_json

HERE = Path(__file__).resolve().parent
SECTIONS = ("diffusion", "ar", "server", "prompt_cache", "prefix_cache", "rpc", "fast_decoding")

# key -> (comparison, bound, what the key is read from)
TARGETS: dict[str, tuple[str, float]] = {
    "diffusion.tokens_per_s_ratio_vs_reference": (">=", 1.0),
    "diffusion.tokens_per_s_ratio_vs_reference_sampling_heavy": (">=", 1.25),
    "diffusion.sampling_ms_per_step_ratio_vs_reference": ("<=", 0.5),
    "diffusion.peak_rss_ratio_vs_reference": ("<=", 1.1),
    "diffusion.peak_rss_ratio_vs_reference_cfg": ("<=", 0.8),
    "ar.gen_tps_ratio_vs_llama_cpp_python": (">=", 1.0),
    "ar.gen_tps_ratio_vs_llama_completion": (">=", 0.95),
    "server.overhead_ratio": ("<=", 1.05),
    "prompt_cache.ttft_ratio": (">=", 5.0),
    "prefix_cache.accuracy_drop_points": ("<=", 2.0),
    "prefix_cache.speedup_vs_uncached": (">=", 2.0),
    "prefix_cache.answer_tps_ratio_vs_reference_with_threshold": (">=", 5.0),
    "fast_decoding.early_stop_identical_fraction": (">=", 1.0),
    "fast_decoding.forwards_ratio_threshold_vs_fixed": ("<=", 1 / 3),
    "fast_decoding.accuracy_drop_points": ("<=", 1.0),
    "fast_decoding.answer_tps_ratio_vs_reference": (">=", 3.0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny models and fewer repetitions (make bench-quick)")
    ap.add_argument("--reps", type=int, help="timed repetitions per comparison (default 5; --quick: 3)")
    ap.add_argument("--threads", type=int,
                    help="CPU threads for every side (default: all cores; --quick: 1, robust on a busy machine)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--models", help="only the diffusion configurations of these presets (comma-separated)")
    ap.add_argument("--configs", help="only the diffusion configurations with these names (comma-separated)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.json, RESULTS.md, plots/")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other sections of the results.json already in --out (re-run one section); "
                         "with --configs, replace only those diffusion rows")
    ap.add_argument("--no-explain", action="store_true",
                    help="skip profiling the configurations behind missed targets (on by default, not with --quick)")
    ap.add_argument("--no-build-lcpp", action="store_true",
                    help="never build llama-cpp-python's venv (the full run builds it when missing)")
    args = ap.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 5)
    args.threads = args.threads or (1 if args.quick else (os.cpu_count() or 1))
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"--sections: unknown {bad}; choose from {SECTIONS}")
    if args.reps < 1 or args.threads < 1:
        ap.error("--reps and --threads must be >= 1")
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    """Each target key with its value (None when not measured) and whether it is met."""
    out = {}
    for key, (op, bound) in TARGETS.items():
        section, name = key.split(".", 1)
        value = (results.get(section) or {}).get(name)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[key] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    return out


def guarded(name: str, errors: list[str], run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``'s section, or ``{"error": ...}`` when it raises BenchError (then listed in ``errors``
    under ``name``): one section's failure never stops the others."""
    try:
        return run()
    except BenchError as exc:
        errors.append(f"{name}: {str(exc).splitlines()[0]}")
        log(f"    FAILED: {exc}")
        return {"error": str(exc)}


def run_diffusion_section(args, manifest: dict, errors: list[str],
                          checkpoint: Callable[[dict], None]) -> dict[str, Any]:
    from hoshikage.testing.diffusion_models import ensure_test_model

    configs = diffusion.quick_configs() if args.quick else diffusion.full_configs()
    if args.models:
        keep = set(args.models.split(","))
        configs = [c for c in configs if c.model in keep]
    if args.configs:
        keep = set(args.configs.split(","))
        configs = [c for c in configs if c.name in keep]
    log(f"== diffusion: {len(configs)} configurations, {args.reps} repetitions, {args.threads} threads")
    rows, failed = [], []
    paths = {}
    out = {"configs": rows, "failed": failed, "reps": args.reps, "threads": args.threads}
    for c in configs:
        try:
            if c.model not in paths:
                paths[c.model] = ensure_test_model(c.model)
            rows.append(diffusion.run_config(c, Path(paths[c.model]), args.threads, args.reps, manifest, log))
        except Exception as exc:  # BenchError, or a harness bug: the other configurations still run
            msg = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()[-3000:]
            log(f"    FAILED: {msg}")
            failed.append({"config": c.name, "error": msg})
            errors.append(f"diffusion {c.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        checkpoint(out)
    out.update(diffusion.headline(rows) if rows else {})
    out["token_identity_asserted"] = sum(1 for r in rows if r["token_identity"]["checked"])
    return out


def run_ar_section(args, manifest: dict, errors: list[str]) -> dict[str, Any]:
    import hoshikage

    lcpp = lcpp_env.find()
    if lcpp is None and not args.quick and not args.no_build_lcpp:
        try:
            lcpp = lcpp_env.ensure(log)
        except RuntimeError as exc:
            errors.append(f"ar: llama-cpp-python build: {str(exc).splitlines()[0]}")
            log(f"    llama-cpp-python could not be built: {exc}")
    max_tokens = 32 if args.quick else 128
    log(f"== autoregressive: SmolLM2, {max_tokens} tokens, {args.reps} repetitions, {args.threads} threads"
        + ("" if lcpp else " (llama-cpp-python: no venv, skipped)"))
    out = guarded("ar", errors, lambda: ar.run_ar(Path(hoshikage.smollm2_path()), args.threads, args.reps,
                                                  max_tokens, manifest, lcpp, args.quick, log))
    if "error" in out:
        return out
    ratios = out["ratios"]
    out["gen_tps_ratio_vs_llama_cpp_python"] = ratios.get("llama_cpp_python", {}).get("gen_tps", {}).get("median")
    out["gen_tps_ratio_vs_llama_completion"] = ratios.get("llama_completion", {}).get("gen_tps", {}).get("median")
    return out


def run_server_section(args, errors: list[str]) -> dict[str, Any]:
    import hoshikage

    max_tokens = 32 if args.quick else 64
    log(f"== server: chat completion, {max_tokens} tokens max, {args.reps} repetitions, {args.threads} threads")
    out = guarded("server", errors, lambda: server.run_server(Path(hoshikage.smollm2_path()), args.threads,
                                                              args.reps, max_tokens, log))
    if "error" in out:
        return out
    out["overhead_summary"] = out["overhead_ratio"]  # median, min, max
    out["overhead_ratio"] = out["overhead_summary"]["median"]  # the key
    return out


def run_prompt_cache_section(args, errors: list[str]) -> dict[str, Any]:
    import hoshikage

    log(f"== prompt cache: next turn of a ~{1000 if args.quick else 2000}-token chat, {args.reps} repetitions, "
        f"{args.threads} threads")
    out = guarded("prompt_cache", errors, lambda: prompt_cache.run_prompt_cache(
        Path(hoshikage.smollm2_path()), args.threads, args.reps, args.quick, log))
    if "error" in out:
        return out
    out["ttft_ratio_summary"] = out["ttft_ratio"]  # median, min, max
    out["ttft_ratio"] = out["ttft_ratio_summary"]["median"]  # the key
    return out


def run_rpc_section(args, manifest: dict, errors: list[str]) -> dict[str, Any]:
    import hoshikage
    from hoshikage.testing.diffusion_models import ensure_test_model

    program = (manifest.get("tools") or {}).get("ggml-rpc-server")
    model = "llada-tiny" if args.quick else "llada-bench"
    log(f"== rpc: local vs split over two loopback rpc-servers, SmolLM2 and {model}, {args.reps} repetitions, "
        f"{args.threads} threads")
    if program is None:
        errors.append("rpc: the build has no ggml-rpc-server (python build_llama.py --rpc)")
        return {"error": "the build has no ggml-rpc-server; build with: python build_llama.py --rpc"}
    return guarded("rpc", errors, lambda: rpc.run_rpc(Path(hoshikage.smollm2_path()), Path(ensure_test_model(model)),
                                                      Path(program), args.threads, args.reps, args.quick, log))


def run_fast_decoding_section(args, errors: list[str]) -> dict[str, Any]:
    from .fast_decoding import run_fast_decoding

    return guarded("fast_decoding", errors, lambda: run_fast_decoding(args.threads, args.quick, log))


def run_prefix_cache_section(args, errors: list[str]) -> dict[str, Any]:
    log(f"== prefix cache: the trained models' long-prompt eval, without and with the cache, and "
        f"llama-diffusion-cli, {args.threads} threads")
    return guarded("prefix_cache", errors, lambda: prefix_cache.run_prefix_cache(args.threads, args.quick, log))


def _merged(path: Path, new: dict[str, Any], ran: list[str], configs: bool = False) -> dict[str, Any]:
    """``new`` plus the sections of the earlier results at ``path`` that were not run again;
    with ``configs`` (``--configs``), the diffusion rows measured now replace the earlier rows
    of the same configurations and the others are kept."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return new
    out = {**new, "errors": [e for e in old.get("errors", []) if e.split(":")[0].split()[0] not in ran]
           + new["errors"]}
    for name in SECTIONS:
        if name not in ran and name in old:
            out[name] = old[name]
    kept = {k: v for k, v in (old.get("explanations") or {}).items() if k.split(".")[0] not in ran}
    if kept:  # the other sections' explanations still hold (--no-explain keeps them; explain() redoes all)
        out["explanations"] = kept
    if configs and "diffusion" in ran and "configs" in old.get("diffusion", {}):
        out["diffusion"] = merge_diffusion_rows(old["diffusion"], new["diffusion"])
    out["merged"] = True
    return out


def merge_diffusion_rows(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The earlier diffusion section with the rows of ``new`` in place of the same-named ones
    (each marked with when it was measured), and the keys worked out again from all rows."""
    fresh = {r["config"]["name"]: {**r, "remeasured": new.get("measured", {}).get("started", "")}
             for r in new.get("configs", [])}
    rows = [fresh.pop(r["config"]["name"], r) for r in old["configs"]] + list(fresh.values())
    out = {k: v for k, v in old.items() if k not in ("configs", "_from", "_sampling_heavy_configs")}
    out.update(configs=rows, **diffusion.headline(rows))
    out["token_identity_asserted"] = sum(1 for r in rows if r["token_identity"]["checked"])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    manifest = native_manifest()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "llama_cpp_commit": manifest.get("llama_cpp_commit"),
        "reps": args.reps, "threads": args.threads,
    }
    errors: list[str] = []
    partial = args.out / "results.partial.json"

    def checkpoint(section: dict) -> None:  # hours-long runs keep what they measured if they die
        write_json(partial, {**results, "diffusion": section, "partial": True})

    sections = {"diffusion": lambda: run_diffusion_section(args, manifest, errors, checkpoint),
                "ar": lambda: run_ar_section(args, manifest, errors),
                "server": lambda: run_server_section(args, errors),
                "prompt_cache": lambda: run_prompt_cache_section(args, errors),
                "prefix_cache": lambda: run_prefix_cache_section(args, errors),
                "rpc": lambda: run_rpc_section(args, manifest, errors),
                "fast_decoding": lambda: run_fast_decoding_section(args, errors)}
    for name in args.sections:
        started, load = time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.getloadavg()[0]
        try:
            results[name] = sections[name]()
        except Exception as exc:  # a harness bug: keep the other sections, report it, fail at the end
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        write_json(partial, {**results, "partial": True})
        results[name]["measured"] = {"started": started, "command": results["command"], "mode": results["mode"],
                                     "reps": args.reps, "threads": args.threads,
                                     "load_average_1min": [load, os.getloadavg()[0]],
                                     "cpu": results["machine"].get("cpu")}
    results["errors"] = errors
    if args.merge:
        results = _merged(args.out / "results.json", results, args.sections, configs=bool(args.configs))
    results["targets"] = evaluate(results)
    if not (args.quick or args.no_explain):
        from .explain import explain

        log("== why targets were missed")
        results["explanations"] = explain(results, log)
    results["seconds"] = round(time.time() - t0, 1)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    write_json(args.out / "results.json", results)
    partial.unlink(missing_ok=True)
    from .report import write_report

    write_report(results, args.out)
    log(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'} in {results['seconds']:.0f} s")
    for key, t in results["targets"].items():
        v = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        verdict = {True: "met", False: "MISSED", None: "—"}[t["met"]]
        log(f"  {key:60s} {v:>12s}  target {t['target']:8s} {verdict}")
    for e in errors:
        log(f"ERROR: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
