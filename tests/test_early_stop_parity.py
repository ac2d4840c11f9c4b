"""Exact early stop against llama.cpp's own diffusion_generate (issue 14): on the trained models,
whose answers end with an end-of-generation token well before the canvas does, the answer with
early stop (the library's default) is the reference's answer, in at most the reference's forwards.

Both run in-process on the same Context (identical logits), in reference mode. Hypothesis draws
algorithm x schedule x steps x filters x alg_temp x cfg x gumbel x seed over every eval task's
prompts; HOSHIKAGE_PARITY_EXAMPLES / 20 examples (default 15).
"""
from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hoshikage as hk
from benchmarks.eval.suite import load_lines, load_models
from hoshikage.generation.diffusion import answer_tokens, diffuse
from hoshikage.sampling import Algorithm, DiffusionParams, Schedule
from hoshikage.testing.reference import reference_run

CANVAS = 96
EXAMPLES = max(10, int(os.environ.get("HOSHIKAGE_PARITY_EXAMPLES", "300")) // 20)
SPECS = {s.name: s for s in load_models()}


@pytest.fixture(scope="module")
def trained(native_build):
    """name -> (model, context, prompts as token lists): every task's first 2 eval prompts."""
    opened = {}
    for name, spec in SPECS.items():
        model = hk.Model(spec.path)
        ctx = hk.Context(model, n_ctx=CANVAS, n_batch=CANVAS, n_ubatch=CANVAS, n_threads=1)
        prompts = [hk.prepare_prompt(model, messages=[{"role": "user", "content": ln.prompt}])
                   for path in spec.evals for ln in load_lines(path)[:2]]
        opened[name] = (model, ctx, prompts)
    yield opened
    for model, ctx, _ in opened.values():
        ctx.close()
        model.close()


@st.composite
def configurations(draw):
    name = draw(st.sampled_from(sorted(SPECS)))
    schedule = draw(st.sampled_from(list(Schedule)))
    if schedule == Schedule.BLOCK_BASED:
        block_length = draw(st.sampled_from([16, 32, 48]))
        steps = CANVAS // block_length * draw(st.integers(1, 4))
    else:
        block_length, steps = 32, draw(st.integers(1, 48))
    params = DiffusionParams(
        steps=steps, algorithm=draw(st.sampled_from(list(Algorithm))), schedule=schedule,
        eps=draw(st.sampled_from([1e-3, 0.01, 0.1])), block_length=block_length,
        temperature=draw(st.sampled_from([0.0, 0.0, 0.0, 0.3, 0.8])), top_k=draw(st.sampled_from([0, 0, 5])),
        top_p=draw(st.sampled_from([1.0, 1.0, 0.9])), alg_temp=draw(st.sampled_from([0.0, 0.0, 0.5])),
        cfg_scale=draw(st.sampled_from([0.0, 0.0, 0.0, 1.0])), add_gumbel_noise=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 2)))
    return name, draw(st.integers(0, 9)), params


def _check(model, ctx, prompt, params):
    expected, ref_forwards = reference_run(ctx, prompt, canvas_length=CANVAS, params=params,
                                           mask_token_id=model.mask_token, shift_logits=model.shift_logits)
    got = diffuse(model, ctx, prompt, canvas_length=CANVAS, params=params)
    n = len(prompt)
    assert answer_tokens(model, got.tokens[n:]) == answer_tokens(model, expected[n:]), params
    assert got.forwards <= ref_forwards, params
    decided = got.tokens != model.mask_token
    assert (got.tokens[decided] == expected[decided]).all(), params
    return got, ref_forwards


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(configurations())
def test_early_stop_answer_identical_to_llama_cpp_in_fewer_forwards(trained, config):
    name, which, params = config
    model, ctx, prompts = trained[name]
    assert params.early_stop and not params.corrected  # the library's defaults
    _check(model, ctx, prompts[which % len(prompts)], params)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_early_stop_saves_forwards_at_the_eval_configuration(trained, name):
    """The models.json configuration (llama-diffusion-cli's flags) on every sampled prompt: the
    same answers, never more forwards; fewer under the block schedule, whose answer blocks finish
    before the last block (the timestep schedule decides most positions in its last steps)."""
    model, ctx, prompts = trained[name]
    args = SPECS[name].cli_args
    block = "--diffusion-block-length" in args
    params = DiffusionParams(steps=int(args[args.index("--diffusion-steps") + 1]),
                             schedule=Schedule.BLOCK_BASED if block else Schedule.TIMESTEP_BASED, block_length=32)
    saved = 0
    for prompt in prompts:
        got, ref_forwards = _check(model, ctx, prompt, params)
        saved += ref_forwards - got.forwards
        full = diffuse(model, ctx, prompt, canvas_length=CANVAS, params=dataclasses.replace(params, early_stop=False))
        assert full.forwards >= got.forwards and not full.stopped_early
    assert saved > 0 if block else saved >= 0


def test_block_stream_ends_when_the_answer_is_final(trained):
    """Block streaming (generation.settled, as the server's diffusion_stream_blocks): with early
    stop no step runs once the settled text is the whole answer; without it the steps go on."""
    from hoshikage.generation.settled import SettledText

    model, _, prompts = trained["llada-tasks"]
    after_done = {}
    for early_stop in (True, False):
        settled, calls = SettledText(model, len(prompts[0])), []

        def on_step(step, total, canvas):
            settled.update(canvas)
            calls.append(settled.done)

        out = hk.generate(model, prompt_tokens=prompts[0], max_tokens=CANVAS - len(prompts[0]), on_step=on_step,
                          diffusion={"steps": 96, "schedule": Schedule.BLOCK_BASED, "block_length": 32,
                                     "early_stop": early_stop}, adjust=False)
        assert out.finish_reason == "stop"
        after_done[early_stop] = sum(calls)
    assert after_done[True] == 0 and after_done[False] > 0
