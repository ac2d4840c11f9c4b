"""The committed trained diffusion models: they load, are small, tokenize prompts as training
did; on the first eval prompt of every task Hoshikage (reference mode) and llama-diffusion-cli
print identical canvases, and prompts the model answers right are answered right by both."""
from __future__ import annotations

import pytest

from benchmarks.eval.runners import CliRunner, HoshikageRunner
from benchmarks.eval.suite import load_lines, load_models, task_name
from hoshikage.trained import TRAINED_MODELS, trained_model_path
from training.data import prompt_ids, vocab_ids

SPECS = {s.name: s for s in load_models()}


@pytest.mark.parametrize("name", sorted(TRAINED_MODELS))
def test_trained_model_loads_with_its_metadata(name, native_build):
    import hoshikage as hk

    path = trained_model_path(name)
    assert path.stat().st_size <= 4_000_000
    assert SPECS[name].path == path and list(SPECS[name].cli_args) == list(TRAINED_MODELS[name].cli_args)
    with hk.Model(path) as m:
        assert m.is_diffusion and m.arch == TRAINED_MODELS[name].arch and m.n_vocab == 320
        assert m.shift_logits == (m.arch == "dream") and m.chat_template
        assert "knows nothing else" in (m.meta("general.description") or "")
        ids = vocab_ids(m.arch)
        for spec_path in SPECS[name].evals:
            prompt = load_lines(spec_path)[0].prompt
            assert list(hk.prepare_prompt(m, messages=[{"role": "user", "content": prompt}])) == \
                prompt_ids(ids, prompt), spec_path


# Eval prompts each committed model answers correctly at its defaults (from benchmarks/eval's
# results): a regression check that both tools keep getting them right.
KNOWN_RIGHT: dict[str, list[tuple[str, str]]] = {
    'llada-tasks': [
        ('words', '63 in words'),
        ('add', '82+8='),
        ('anagram', 'unscramble dstuy'),
        ('three', '3 drinks, sorted, no juice'),
        ('anagram_fewshot', 'aprs: raps\nghint: night\nailr: liar\neilm:'),
    ],
    'dream-tasks': [
        ('words', '63 in words'),
        ('add', '87+6='),
        ('anagram', 'unscramble dstuy'),
        ('three', '3 drinks, sorted, no juice'),
        ('anagram_fewshot', 'lmpu: lump\nadel: deal\nchin: inch\narw:'),
    ],
}


@pytest.mark.parametrize("name", sorted(TRAINED_MODELS))
def test_both_tools_give_identical_canvases_and_right_answers(name, tool):
    from pathlib import Path

    spec = SPECS[name]
    lines = {task_name(p): load_lines(p) for p in spec.evals}
    hk_run = HoshikageRunner(spec.path, threads=1)
    cli_run = CliRunner(spec.path, threads=1, cli=Path(tool("llama-diffusion-cli")))
    try:
        cases = [(t, ls[0].prompt) for t, ls in lines.items()] + list(KNOWN_RIGHT[name])
        for task, prompt in cases:
            line = next(ln for ln in lines[task] if ln.prompt == prompt)
            ours = hk_run.answer(prompt, list(spec.cli_args))
            ref = cli_run.answer(prompt, list(spec.cli_args))
            assert ours.canvas == ref.canvas, (task, prompt, ours.canvas, ref.canvas)
            if (task, prompt) in KNOWN_RIGHT[name]:
                assert line.score(ours.text) and line.score(ref.text), (task, prompt, ours.text)
    finally:
        hk_run.close()
