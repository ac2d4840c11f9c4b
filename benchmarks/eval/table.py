"""Markdown tables from an eval results file (benchmarks/eval/results.json by default).

    python -m benchmarks.eval.table [results.json]

One table per model: a row per configuration and tool, a column per task with accuracy,
then forwards per answer token and answer tokens/s averaged over the tasks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .suite import EVAL_DIR


def tables(res: dict) -> str:
    out = []
    for name, m in res["models"].items():
        rows = m["rows"]
        tasks = list(rows[0]["tasks"]) if rows else []
        out.append(f"**{name}** (`{' '.join(m['cli_args'])}`), {res['prompts_per_task'] or 'all'} prompts per task\n")
        out.append("| configuration | tool | " + " | ".join(tasks) + " | forwards / answer token | answer tok/s |")
        out.append("|---" * (len(tasks) + 4) + "|")
        for r in rows:
            f = r["tasks"]
            fw = sum(f[t]["forwards_per_answer_token"] for t in tasks) / len(tasks)
            tps = sum(f[t]["answer_tokens_per_s"] for t in tasks) / len(tasks)
            cells = " | ".join(f"{100 * f[t]['accuracy']:.0f}%" for t in tasks)
            same = r.get("identical_canvas_vs_cli")
            tool = r["tool"] + (f" (same canvas {100 * same:.0f}%)" if same is not None and r["tool"] == "hoshikage" else "")
            out.append(f"| {r['label']} | {tool} | {cells} | {fw:.2f} | {tps:.0f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else EVAL_DIR / "results.json"
    print(tables(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
