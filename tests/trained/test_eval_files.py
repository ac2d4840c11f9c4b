"""The eval suite's files have the documented shape, and the task generators agree with
their own scorer (no JAX, no native library)."""
from __future__ import annotations

import json
import random

import pytest

from benchmarks.eval.suite import MODELS_JSON, REPO, load_lines, load_models, parse_line
from training.data import prompt_ids, vocab_ids
from training.tasks import CANVAS, TASKS, eval_items, number_words, score


def test_models_json_shape():
    raw = json.loads(MODELS_JSON.read_text())
    assert list(raw) == ["models"]
    for m in raw["models"]:
        assert list(m) == ["name", "path", "evals", "cli_args"]
        assert m["path"].endswith(".gguf") and all(e.endswith(".jsonl") for e in m["evals"])
    specs = load_models()  # validates: repository-relative paths that exist, string flags
    assert {s.name for s in specs} == {"llada-tasks", "dream-tasks"}
    for s in specs:
        assert "-ub" in s.cli_args and "--diffusion-steps" in s.cli_args


def test_every_eval_line_parses_and_its_answers_score():
    for spec in load_models():
        for path in spec.evals:
            lines = load_lines(path)
            assert len(lines) >= 30, path
            assert len({ln.prompt for ln in lines}) == len(lines), f"{path}: repeated prompts"
            for ln in lines:
                assert ln.score(" " + ln.answers[0] + "\n") and not ln.score(ln.answers[0] + "x")


def test_eval_files_are_what_the_generators_write():
    for name in TASKS:
        lines = load_lines(REPO / "benchmarks" / "eval" / f"{name}.jsonl")
        items = eval_items(name, 100)
        assert [(ln.prompt, ln.answers) for ln in lines] == [(it.prompt, it.answers) for it in items]


def test_line_shape_errors():
    assert parse_line('{"prompt": "p", "accept": "a+"}', "x").score(" aaa ")
    for bad in ('{"prompt": "p"}', '{"prompt": "p", "answers": []}', '{"prompt": "", "answers": ["a"]}',
                '{"prompt": "p", "answers": ["a"], "accept": "a"}', '{"prompt": "p", "answers": [" a"]}'):
        with pytest.raises(ValueError):
            parse_line(bad, "x")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_generators_fit_the_canvas_and_their_answers_score(task):
    rng = random.Random(3)
    ids = {a: vocab_ids(a) for a in ("llada", "dream")}
    for _ in range(300):
        it = TASKS[task].draw(rng)
        assert it.answers and len(set(it.answers)) == len(it.answers)
        assert all(score(it, a) for a in it.answers)
        for v in ids.values():
            assert len(prompt_ids(v, it.prompt)) + max(map(len, it.answers)) + 1 <= CANVAS
        if TASKS[task].long_prompt:
            assert len(it.prompt) >= 4 * max(map(len, it.answers))


def test_task_semantics():
    assert number_words(47) == "forty-seven" and number_words(347) == "three hundred forty-seven"
    assert number_words(900) == "nine hundred" and number_words(15) == "fifteen"
    rng = random.Random(0)
    for _ in range(50):
        it = TASKS["add"].draw(rng)
        a, b = it.prompt.rstrip("=").split("+")
        assert it.answers == (str(int(a) + int(b)),)
        it = TASKS["anagram"].draw(rng)
        letters = it.prompt.split()[-1]
        assert all(sorted(w) == list(letters) for w in it.answers)
        it = TASKS["three"].draw(rng)
        assert all(len(set(a.split(", "))) == 3 and a.split(", ") == sorted(a.split(", ")) for a in it.answers)
        assert ", sorted" in it.prompt and len(it.answers) in (10, 20, 35)  # C(5..7, 3)


def test_the_steps_sweep_plot_leaves_out_the_fewer_forwards_rows(tmp_path):
    from benchmarks.eval.plot import fixed_step_rows, plot

    res = json.loads((REPO / "benchmarks" / "eval" / "results.json").read_text())
    for m in res["models"].values():
        kept = fixed_step_rows(m["rows"])
        assert kept and len(kept) < len(m["rows"])  # the committed results hold both kinds
        assert not any(r["threshold"] or r["early_stop"] for r in kept)
        assert all(r in kept for r in m["rows"] if not r["threshold"] and not r["early_stop"])
    plot(res, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
