"""A newcomer's first chat: a server whose registry holds only what ``make run`` registers
(``ensure_default_models``), asked each trained model's example prompt (the one its printed
curl line uses) with no sampling fields, i.e. the server's defaults, answers it right."""
from __future__ import annotations

from benchmarks.eval.suite import load_lines, load_models
from conftest import LiveServer
from hoshikage.server.defaults import ensure_default_models
from hoshikage.server.registry import Registry
from hoshikage.trained import TRAINED_MODELS


def _eval_line(model: str, prompt: str):
    spec = next(s for s in load_models() if s.name == model)
    return next(ln for p in spec.evals for ln in load_lines(p) if ln.prompt == prompt)


def test_each_trained_model_answers_its_example_prompt_with_the_server_defaults(tmp_path, native_build):
    home = tmp_path / "home"
    added = ensure_default_models(Registry(home))
    assert set(TRAINED_MODELS) <= set(added)
    server = LiveServer(home).start()
    try:
        for name, model in TRAINED_MODELS.items():
            line = _eval_line(name, model.example_prompt)
            # no seed: what a newcomer sends (diffusion's default seed is 0); then seeds 1-3, so
            # that a right answer is not one lucky draw of the sampling defaults (temperature 0.2)
            for seed in (None, 1, 2, 3):
                body = {"model": name, "messages": [{"role": "user", "content": model.example_prompt}]}
                r = server.post("/v1/chat/completions", body if seed is None else {**body, "seed": seed})
                assert r.status_code == 200, r.text
                text = r.json()["choices"][0]["message"]["content"]
                assert line.score(text), (name, model.example_prompt, seed, text)
    finally:
        server.stop()
