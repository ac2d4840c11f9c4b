"""The evaluation suite's files: ``models.json`` and one JSONL per task, their shape and scoring.

``models.json``: ``{"models": [{"name", "path", "evals": [...], "cli_args": [...]}]}`` with
repository-relative paths. A JSONL line is ``{"prompt": str, "answers": [str, ...]}`` or
``{"prompt": str, "accept": <regex matching the whole answer>}``. The answer is the generated
text with surrounding whitespace stripped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVAL_DIR = REPO / "benchmarks" / "eval"
MODELS_JSON = EVAL_DIR / "models.json"


@dataclass(frozen=True)
class Line:
    prompt: str
    answers: tuple[str, ...] | None = None
    accept: str | None = None

    def score(self, text: str) -> bool:
        t = text.strip()
        if self.answers is not None:
            return t in self.answers
        return re.fullmatch(self.accept, t) is not None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    evals: tuple[Path, ...]
    cli_args: tuple[str, ...]


def parse_line(raw: str, where: str) -> Line:
    d = json.loads(raw)
    if not isinstance(d, dict) or not isinstance(d.get("prompt"), str) or not d["prompt"]:
        raise ValueError(f"{where}: needs a non-empty string 'prompt'")
    keys = set(d) - {"prompt"}
    if keys == {"answers"}:
        a = d["answers"]
        if not isinstance(a, list) or not a or not all(isinstance(x, str) and x == x.strip() and x for x in a):
            raise ValueError(f"{where}: 'answers' must be a non-empty list of stripped, non-empty strings")
        return Line(d["prompt"], answers=tuple(a))
    if keys == {"accept"}:
        if not isinstance(d["accept"], str):
            raise ValueError(f"{where}: 'accept' must be a regex string")
        re.compile(d["accept"])
        return Line(d["prompt"], accept=d["accept"])
    raise ValueError(f"{where}: expected exactly one of 'answers' or 'accept' besides 'prompt', got {sorted(keys)}")


def load_lines(path: Path) -> list[Line]:
    lines = []
    with open(path, encoding="utf-8") as f:
        for i, raw in enumerate(f, 1):
            if raw.strip():
                lines.append(parse_line(raw, f"{path.name}:{i}"))
    if not lines:
        raise ValueError(f"{path}: no lines")
    return lines


def load_models(path: Path = MODELS_JSON) -> list[ModelSpec]:
    """Parse and validate models.json (paths must exist, relative to the repository)."""
    d = json.loads(path.read_text(encoding="utf-8"))
    if set(d) != {"models"} or not isinstance(d["models"], list) or not d["models"]:
        raise ValueError(f"{path}: expected {{'models': [...]}}")
    out = []
    for i, m in enumerate(d["models"]):
        if set(m) != {"name", "path", "evals", "cli_args"}:
            raise ValueError(f"{path}: models[{i}] needs exactly name, path, evals, cli_args; got {sorted(m)}")
        if not (isinstance(m["cli_args"], list) and all(isinstance(a, str) for a in m["cli_args"])):
            raise ValueError(f"{path}: models[{i}].cli_args must be a list of strings")
        rel = [m["path"], *m["evals"]]
        if any(not isinstance(p, str) or Path(p).is_absolute() or not (REPO / p).is_file() for p in rel):
            raise ValueError(f"{path}: models[{i}]: paths must be repository-relative files: {rel}")
        out.append(ModelSpec(m["name"], REPO / m["path"], tuple(REPO / e for e in m["evals"]),
                             tuple(m["cli_args"])))
    return out


def task_name(path: Path) -> str:
    return path.stem
