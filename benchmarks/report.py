"""RESULTS.md and its plots from the dict that ``run.py`` writes to results.json.

    python -m benchmarks.report [results.json]    # re-render without re-measuring
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .common import fmt

HERE = Path(__file__).resolve().parent


def _targets_table(results: dict) -> list[str]:
    lines = ["| key | target | measured (median) | met |", "|---|---|---|---|"]
    for key, t in results["targets"].items():
        v = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
        lines.append(f"| `{key}` | {t['target']} | {v} | {met} |")
    return lines


def _diffusion_tables(d: dict) -> list[str]:
    rows = d.get("configs", [])
    if not rows:
        return ["No diffusion configuration ran."]
    out = ["Hoshikage ÷ reference per repetition, then median (min–max). tok/s counts the masked part of the "
           "canvas (canvas − prompt). 'sampling share' is the reference's sampling time ÷ its step time.", "",
           "| configuration | ref tok/s | Hoshikage tok/s | tok/s ratio | ref ms/step | ref sampling ms/step "
           "| Hoshikage sampling ms/step | sampling ratio | ref decode ms/step | Hoshikage decode ms/step "
           "| ref sampling share | tokens identical |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref, hk, q = r["reference"], r["hoshikage"], r["ratios"]
        ident = "yes" if r["token_identity"]["identical"] else "**no**"
        label = r["label"] + (f" (re-measured {r['remeasured']})" if r.get("remeasured") else "")
        out.append(f"| {label} | {fmt(ref['tokens_per_s'], 1)} | {fmt(hk['tokens_per_s'], 1)} "
                   f"| {fmt(q['tokens_per_s'], 3)} | {fmt(ref['ms_per_step'], 1)} "
                   f"| {fmt(ref['sampling_ms_per_step'], 2)} | {fmt(hk['sampling_ms_per_step'], 2)} "
                   f"| {fmt(q['sampling_ms_per_step'], 3)} | {fmt(ref['decode_ms_per_step'], 1)} "
                   f"| {fmt(hk['decode_ms_per_step'], 1)} | {fmt(r['reference_sampling_share'], 2)} | {ident} |")
    out += ["", "Peak RSS of each process (MB; Hoshikage's includes Python and numpy):", "",
            "| configuration | reference | ref RSS MB | Hoshikage RSS MB | RSS ratio |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['label']} | {r['reference_tool']} | {fmt(r['reference']['peak_rss_mb'], 0)} "
                   f"| {fmt(r['hoshikage']['peak_rss_mb'], 0)} | {fmt(r['ratios']['peak_rss'], 3)} |")
    for f in d.get("failed", []):
        out.append(f"\n**{f['config']} failed:** `{f['error'].splitlines()[0]}`")
    return out


def _ar_tables(a: dict) -> list[str]:
    if "error" in a:
        return [f"**Failed:** `{a['error'].splitlines()[0]}`"]
    out = [f"SmolLM2-135M Q4_1, {a['n_prompt']}-token prompt, {a['n_gen']} greedy tokens, {a['threads']} "
           "threads.", "",
           "| side | time to first token ms | prompt tok/s | generation tok/s |", "|---|---|---|---|"]
    names = {"hoshikage": "Hoshikage", "llama_cpp_python": "llama-cpp-python",
             "llama_completion": "llama-completion (its own perf counters)"}
    for key, name in names.items():
        if key in a:
            s = a[key]
            out.append(f"| {name} | {fmt(s['ttft_ms'], 1)} | {fmt(s['prompt_tps'], 1)} | {fmt(s['gen_tps'], 1)} |")
    for key, r in a.get("ratios", {}).items():
        out.append(f"| *Hoshikage ÷ {names[key].split(' (')[0]}* | {fmt(r['ttft_ms'], 3)} "
                   f"| {fmt(r['prompt_tps'], 3)} | {fmt(r['gen_tps'], 3)} |")
    if a.get("llama_cpp_python_note"):
        out.append(f"\nllama-cpp-python: {a['llama_cpp_python_note']}")
    if a.get("llama_bench"):
        lb = ", ".join(f"{k} {v['avg_tps']:.1f} ± {v['stddev_tps']:.1f} tok/s" for k, v in a["llama_bench"].items())
        out.append(f"\nllama-bench (its own {next(iter(a['llama_bench'].values()))['reps']} repetitions, "
                   f"not paired): {lb}.")
    return out


def _server_tables(s: dict) -> list[str]:
    if "error" in s:
        return [f"**Failed:** `{s['error'].splitlines()[0]}`"]
    out = [f"Non-streaming chat completion, greedy, up to {s['max_tokens']} tokens "
           f"({s['completion_tokens']} generated); answers identical.", "",
           "| | wall ms |", "|---|---|",
           f"| library `generate()` | {fmt(s['library_wall_ms'], 1)} |",
           f"| HTTP `/v1/chat/completions` | {fmt(s['http_wall_ms'], 1)} |",
           f"| HTTP ÷ library, per pair | {fmt(s['overhead_summary'], 3)} |"]
    ls = s.get("llama_server", {})
    if ls.get("skipped"):
        out.append(f"\nAgainst llama-server: not measured — {ls['skipped']}.")
    elif ls:
        out += ["", "| | wall ms |", "|---|---|",
                f"| llama-server | {fmt(ls['llama_server_wall_ms'], 1)} |",
                f"| Hoshikage server | {fmt(ls['hoshikage_server_wall_ms'], 1)} |",
                f"| tok/s ratio, Hoshikage ÷ llama-server | {fmt(ls['tokens_per_s_ratio'], 3)} |",
                f"\nSame answer as llama-server: {'yes' if ls['answers_identical'] else 'no'}."]
    return out


def _prompt_cache_tables(c: dict) -> list[str]:
    if "error" in c:
        return [f"**Failed:** `{c['error'].splitlines()[0]}`"]
    out = [f"Time to first token of a chat's next turn: {c['turns']} exchanges of filler, the previous turn "
           f"{c['previous_tokens']} prompt tokens, the next {c['next_tokens']}; streaming, greedy, "
           f"{c['max_tokens']} tokens answered. Two servers side by side, asked alternately; ratio = without ÷ "
           f"with, per repetition. Answers identical: {'yes' if c['answers_identical'] else '**no**'}.", "",
           "| | time to first token, ms | prompt tokens reused |", "|---|---|---|",
           f"| Hoshikage, `PROMPT_CACHE=true` | {fmt(c['cached_ttft_ms'], 1)} | {fmt(c['cached_tokens'], 0)} |",
           f"| Hoshikage, `PROMPT_CACHE=false` | {fmt(c['uncached_ttft_ms'], 1)} | 0 |",
           f"| without ÷ with, per repetition | {fmt(c['ttft_ratio_summary'], 2)} | |"]
    ls = c.get("llama_server", {})
    if ls.get("skipped"):
        out.append(f"\nllama-server with `cache_prompt` true vs false: not measured — {ls['skipped']}.")
    elif ls:
        out += ["", "| | time to first token, ms | prompt tokens reused |", "|---|---|---|",
                f"| llama-server, `cache_prompt: true` | {fmt(ls['cached_ttft_ms'], 1)} | "
                f"{fmt(ls['cached_tokens'], 0)} |",
                f"| llama-server, `cache_prompt: false` | {fmt(ls['uncached_ttft_ms'], 1)} | |",
                f"| without ÷ with, per repetition | {fmt(ls['ttft_ratio'], 2)} | |"]
    return out


def plots(results: dict, out_dir: Path) -> list[str]:
    """PNG files (relative paths) or [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    pdir = out_dir / "plots"
    pdir.mkdir(exist_ok=True)
    rows = (results.get("diffusion") or {}).get("configs", [])
    if rows:
        names = [r["config"]["name"] for r in rows]
        for metric, title, ref_line, fname in (
                ("tokens_per_s", "Diffusion tokens/s, Hoshikage ÷ reference", 1.0, "diffusion_tps_ratio.png"),
                ("sampling_ms_per_step", "Diffusion sampling ms/step, Hoshikage ÷ reference", 0.5,
                 "diffusion_sampling_ratio.png"),
                ("peak_rss", "Diffusion peak RSS, Hoshikage ÷ reference", 1.0, "diffusion_rss_ratio.png")):
            med = [r["ratios"][metric]["median"] or 0 for r in rows]
            lo = [m - (r["ratios"][metric]["min"] or m) for m, r in zip(med, rows)]
            hi = [(r["ratios"][metric]["max"] or m) - m for m, r in zip(med, rows)]
            fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
            ax.barh(names, med, xerr=[lo, hi], color="#4a6fa5", capsize=3)
            ax.axvline(ref_line, color="#c44", ls="--", lw=1)
            ax.invert_yaxis()
            ax.set_title(title + " (median, min–max)")
            fig.tight_layout()
            fig.savefig(pdir / fname, dpi=110)
            plt.close(fig)
            made.append(f"plots/{fname}")
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
        y = range(len(rows))
        for k, (side, color) in enumerate((("reference", "#999"), ("hoshikage", "#4a6fa5"))):
            dec = [r[side]["decode_ms_per_step"]["median"] or 0 for r in rows]
            smp = [r[side]["sampling_ms_per_step"]["median"] or 0 for r in rows]
            pos = [i + 0.4 * k for i in y]
            ax.barh(pos, dec, height=0.38, color=color, label=f"{side} decode")
            ax.barh(pos, smp, left=dec, height=0.38, color=color, alpha=0.45, hatch="//",
                    label=f"{side} sampling")
        ax.set_yticks([i + 0.2 for i in y], names)
        ax.invert_yaxis()
        ax.set_xlabel("ms per step (median)")
        ax.set_title("Diffusion step time: decode + sampling")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(pdir / "diffusion_step_breakdown.png", dpi=110)
        plt.close(fig)
        made.append("plots/diffusion_step_breakdown.png")
    a = results.get("ar") or {}
    sides = [(k, n) for k, n in (("llama_completion", "llama-completion"), ("llama_cpp_python", "llama-cpp-python"),
                                 ("hoshikage", "Hoshikage")) if k in a]
    if sides:
        fig, ax = plt.subplots(figsize=(6, 3))
        med = [a[k]["gen_tps"]["median"] for k, _ in sides]
        err = [[m - a[k]["gen_tps"]["min"] for m, (k, _) in zip(med, sides)],
               [a[k]["gen_tps"]["max"] - m for m, (k, _) in zip(med, sides)]]
        ax.bar([n for _, n in sides], med, yerr=err, color=["#999", "#bbb", "#4a6fa5"][:len(sides)], capsize=4)
        ax.set_ylabel("generation tok/s")
        ax.set_title("SmolLM2 generation (median, min–max)")
        fig.tight_layout()
        fig.savefig(pdir / "ar_gen_tps.png", dpi=110)
        plt.close(fig)
        made.append("plots/ar_gen_tps.png")
    return made


def _explanations(ex: dict) -> list[str]:
    """The "why" of each missed target (benchmarks/explain.py): split, mechanism, profile."""
    out = ["Each missed key: by how much, the configuration it was read from, where the time goes on each "
           "side (the run's medians), the mechanism, and a cProfile of Hoshikage on that configuration "
           "(`python -m benchmarks.explain`).", ""]
    shown: dict[str, str] = {}  # configuration -> the first key that showed its split and profile
    for key, e in ex.items():
        out += [f"### `{key}`: {e['value']:.3f}, target {e['target']} ({e['by']})", ""]
        first = shown.get(e.get("config") or "")
        if first and "rss" not in e:
            out += [f"From **{e['config']}**, as for `{first}` above.", ""]
            continue
        if e.get("config"):
            shown[e["config"]] = key
            out.append(f"From **{e['config']}**: {e['split']}.")
        if e.get("why"):
            out += ["", e["why"]]
        rss = e.get("rss")
        if rss:
            out += ["", f"Peak RSS: llama.cpp {fmt(rss['reference_mb'], 0)} MB, Hoshikage {fmt(rss['hoshikage_mb'], 0)} "
                        f"MB; a Python process that only imports hoshikage and loads libllama: "
                        f"{'—' if rss['import_only_mb'] is None else format(rss['import_only_mb'], '.0f')} MB."]
        prof = e.get("profile")
        if prof:
            head = f"Profile: {prof['what']}"
            if "sampling_ms_per_step" in prof:
                head += (f" — decode {prof['decode_ms_per_step']:.1f} ms/step, sampling "
                         f"{prof['sampling_ms_per_step']:.1f} ms/step")
            out += ["", head + ":", "", "| function | calls | own s | cumulative s |", "|---|---|---|---|"]
            out += [f"| `{t['function']}` | {t['calls']} | {t['own_s']:.3f} | {t['cum_s']:.3f} |" for t in prof["top"]]
        if e.get("error"):
            out += ["", f"(explaining failed: `{e['error']}`)"]
        out.append("")
    return out


def render(results: dict, images: list[str]) -> str:
    m = results["machine"]
    load = lambda k: ", ".join(f"{x:.2f}" for x in m.get(k, [])) or "—"  # noqa: E731
    lines = [
        "# Benchmark results", "",
        f"Generated by `{results['command']}` ({results['mode']} mode) on {results['started']}, "
        f"in {results.get('seconds', 0):.0f} s. How to read and reproduce: [docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; {m['os']}; Python {m['python']}.",
        f"- Load average (1, 5, 15 min) at start: {load('load_average_at_start')}; at end: "
        f"{load('load_average_at_end')}. A load above the core count means other work shared the CPUs: "
        "absolute figures are then noisy, ratios within a repetition much less so.",
        f"- llama.cpp {results.get('llama_cpp_commit')}; {results['threads']} thread(s) on every side; "
        f"{results['reps']} timed repetition(s) per comparison, sides alternated.",
        "", "## Targets", "", *_targets_table(results), "",
    ]
    if results.get("merged"):
        lines += ["Sections were measured by separate runs (`--merge`):", ""]
        for name in ("diffusion", "ar", "server", "prompt_cache", "prefix_cache", "rpc", "fast_decoding"):
            m = (results.get(name) or {}).get("measured")
            if m:
                a, b = m["load_average_1min"]
                lines.append(f"- {name}: {m['started']}, {m['mode']} mode, {m['reps']} repetitions, {m['threads']} "
                             f"thread(s), 1-min load {a:.2f} → {b:.2f}"
                             + (f", {m['cpu']}" if m.get("cpu") else "") + f": `{m['command']}`")
        again = [r for r in (results.get("diffusion") or {}).get("configs", []) if r.get("remeasured")]
        if again:
            lines.append(f"- diffusion configurations re-measured on {again[0]['remeasured']} "
                         f"(`--merge --configs`, rows marked below): {', '.join(r['config']['name'] for r in again)}")
        lines.append("")
    if "diffusion" in results:
        d = results["diffusion"]
        lines += ["## Diffusion: Hoshikage vs llama.cpp (reference mode)", ""]
        if "error" in d:
            lines.append(f"**Failed:** `{d['error']}`")
        else:
            lines += [f"Token identity asserted on {d.get('token_identity_asserted', 0)} configurations "
                      "(both loops on one Context); canvas text compared on every repetition.", "",
                      *_diffusion_tables(d)]
            if d.get("_from"):
                lines += ["", "Keys read from: " + "; ".join(f"`{k}` ← {v}" for k, v in d["_from"].items()) + ".",
                          f"Sampling-heavy configurations (reference sampling share ≥ 40%): "
                          f"{', '.join(d['_sampling_heavy_configs']) or 'none'}."]
        lines.append("")
    if "ar" in results:
        lines += ["## Autoregressive: SmolLM2", "", *_ar_tables(results["ar"]), ""]
    if "server" in results:
        lines += ["## Server overhead", "", *_server_tables(results["server"]), ""]
    if "prompt_cache" in results:
        lines += ["## Prompt cache across chat turns", "", *_prompt_cache_tables(results["prompt_cache"]), ""]
    if "prefix_cache" in results:
        from .prefix_cache import tables as prefix_cache_tables

        lines += ["## Diffusion prefix KV cache", "", *prefix_cache_tables(results["prefix_cache"]), ""]
    if "rpc" in results:
        from .rpc import tables

        lines += ["## Across machines: split over two loopback RPC servers", "", *tables(results["rpc"]), ""]
    if "fast_decoding" in results:
        from .fast_decoding import tables as fast_decoding_tables

        lines += ["## Fewer forwards: early stop and threshold decoding", "",
                  *fast_decoding_tables(results["fast_decoding"]), ""]
    if results.get("explanations"):
        lines += ["## Why targets were missed", "", *_explanations(results["explanations"])]
    if images:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in images] + [""]
    if results.get("errors"):
        lines += ["## Errors", ""] + [f"- `{e}`" for e in results["errors"]] + [""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    images = plots(results, out_dir)
    (out_dir / "RESULTS.md").write_text(render(results, images))


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    write_report(json.loads(path.read_text()), path.parent)
