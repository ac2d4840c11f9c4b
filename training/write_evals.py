"""Write benchmarks/eval/<task>.jsonl from training.tasks: one line per prompt,
``{"prompt": <user message>, "answers": [every accepted answer]}``.

    python -m training.write_evals [--n 100]

Eval prompts come from their own seeded stream (``tasks.eval_items``); being generated from the
same finite pools, some also occur in training (the anagram and category prompts all do).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .tasks import TASKS, eval_items

EVAL_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "eval"


def write(n: int, out: Path = EVAL_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TASKS:
        path = out / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for it in eval_items(name, n):
                f.write(json.dumps({"prompt": it.prompt, "answers": list(it.answers)}) + "\n")
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.write_evals", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100, help="prompts per task (fewer when a task has fewer)")
    for p in write(ap.parse_args(argv).n):
        print(p, sum(1 for _ in open(p)), "lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
