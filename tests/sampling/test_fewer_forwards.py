"""Fewer forwards (issue 14): exact early stop and threshold / factor parallel decoding, on
synthetic logits. Parity of early stop with llama.cpp's own loop is in tests/test_diffusion_parity.py."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import synthetic_logits
from hoshikage.errors import ParameterError
from hoshikage.sampling import Algorithm, DiffusionParams, Schedule, run_diffusion, validate_params
from hoshikage.sampling.early_stop import AnswerEnd
from hoshikage.sampling.parallel import ParallelRule

V, MASK, EOG = 300, 299, 7
PROMPT = (5, 6, 8, 9)


def _eog_from(fn, position: int, boost: float = 9.0):
    """``fn`` with the end-of-generation token made likely from canvas ``position`` on."""
    def wrapped(tokens):
        out = fn(tokens).copy()
        out[position:, EOG] += np.float32(boost)
        return out
    return wrapped


def _run(params, fn, *, canvas=32, eog=(EOG,), cb=None):
    return run_diffusion(list(PROMPT), canvas_length=canvas, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                         params=params, shift_logits=False, step_callback=cb,
                         eog_ids=None if eog is None else np.array(eog, dtype=np.int32))


def _answer(tokens) -> list[int]:
    after = tokens[len(PROMPT):].tolist()
    return after[:after.index(EOG)] if EOG in after else after


@st.composite
def configurations(draw):
    schedule = draw(st.sampled_from(list(Schedule)))
    blocks = draw(st.sampled_from([1, 2, 4]))  # canvas 32: blocks of 32, 16, 8
    steps = blocks * draw(st.integers(1, 4)) if schedule == Schedule.BLOCK_BASED else draw(st.integers(1, 12))
    params = DiffusionParams(
        steps=steps, algorithm=draw(st.sampled_from(list(Algorithm))), schedule=schedule,
        block_length=32 // blocks, temperature=draw(st.sampled_from([0.0, 0.0, 0.7])),
        top_k=draw(st.sampled_from([0, 5])), alg_temp=draw(st.sampled_from([0.0, 0.0, 0.5])),
        cfg_scale=draw(st.sampled_from([0.0, 0.0, 1.0])), add_gumbel_noise=draw(st.booleans()),
        corrected=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 2)), early_stop=False)
    return params, draw(st.integers(len(PROMPT), 31)), draw(st.integers(0, 5))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations())
def test_early_stop_keeps_the_answer_and_never_runs_more_forwards(config):
    params, eog_at, seed = config
    fn = _eog_from(synthetic_logits(32, V, seed, mask_token_id=MASK), eog_at)
    full = _run(params, fn)
    early = _run(dataclasses.replace(params, early_stop=True), fn)
    assert _answer(early.tokens) == _answer(full.tokens)
    decided = early.tokens != MASK
    assert (early.tokens[decided] == full.tokens[decided]).all()  # positions never change once unmasked
    assert early.forwards <= full.forwards and early.steps_run <= full.steps_run
    assert early.forwards == early.steps_run * (2 if params.cfg_scale > 0 else 1)
    if early.stopped_early:
        assert EOG in early.tokens[len(PROMPT):].tolist()


def test_early_stop_stops_once_the_answer_is_decided():
    """Positions 4-11 and the end (12) are sure, the rest flat: one position a step, the sure ones
    first, so the answer is decided after 9 of the 28 steps."""
    params = DiffusionParams(steps=28, schedule=Schedule.BLOCK_BASED, block_length=32, early_stop=True)
    sure = _sure_logits(32, set(range(4, 12)), end_at=12)
    seen = []
    res = _run(params, sure, cb=lambda s, t, c: seen.append(c.copy()))
    assert res.stopped_early and res.forwards == res.steps_run == 9
    end = AnswerEnd(np.array([EOG]), len(PROMPT), MASK)
    assert end.decided(res.tokens) and not any(end.decided(c) for c in seen)  # not a step later or earlier
    full = _run(dataclasses.replace(params, early_stop=False), sure)
    assert _answer(res.tokens) == _answer(full.tokens) and full.forwards == 28


def test_early_stop_needs_the_end_of_generation_ids():
    fn = _eog_from(synthetic_logits(32, V, 0, mask_token_id=MASK), 12, boost=40.0)
    full = _run(DiffusionParams(steps=28, early_stop=False), fn)
    for res in (_run(DiffusionParams(steps=28), fn, eog=None), _run(DiffusionParams(steps=28, early_stop=False), fn)):
        assert not res.stopped_early and res.forwards == 28 and (res.tokens == full.tokens).all()


def test_answer_end_rules():
    end = AnswerEnd(np.array([EOG, MASK, 3]), 2, MASK)  # the mask id is never an end
    assert not end.decided(np.array([1, 1, MASK, EOG, 4]))  # a mask before the end may still become one
    assert end.decided(np.array([1, 1, 4, EOG, MASK]))  # after the end: does not matter
    assert end.decided(np.array([1, 1, 3, MASK, MASK]))
    assert not end.decided(np.array([1, 1, 4, 4, MASK]))  # no end yet
    assert not end.decided(np.array([EOG, 1, 4, 4, 4]))  # the prompt is not the answer


# --- threshold and factor ----------------------------------------------------------------------

def _sure_logits(canvas: int, sure: set[int], end_at: int | None = None):
    """Positions in ``sure`` put ~all mass on one token (``end_at``: on the end token, a little
    less); the others are flat-ish (p < 0.1)."""
    rng = np.random.default_rng(1)
    base = (rng.standard_normal((canvas, V)) * 0.1).astype(np.float32)
    for p in sure:
        base[p, 10 + p] = 30.0
    if end_at is not None:
        base[end_at, EOG] = 20.0
    base[:, MASK] = -30.0
    return lambda tokens: base.copy()


def _unmasked_per_step(params, fn, canvas=32):
    seen = []
    res = _run(params, fn, canvas=canvas, eog=None, cb=lambda s, t, c: seen.append(int((c == MASK).sum())))
    seen = seen[:res.steps_run] + [int((res.tokens == MASK).sum())]  # a callback may come before a step that
    return [a - b for a, b in zip(seen, seen[1:])], res  # finds no mask and does not run


@pytest.mark.parametrize("schedule", list(Schedule))
def test_threshold_unmasks_every_sure_position_at_once_and_steps_is_a_ceiling(schedule):
    sure = {4, 9, 10, 20, 31}
    params = DiffusionParams(steps=28, schedule=schedule, block_length=32, threshold=0.9)
    per_step, res = _unmasked_per_step(params, _sure_logits(32, sure))
    fixed, _ = _unmasked_per_step(dataclasses.replace(params, threshold=0.0), _sure_logits(32, sure))
    assert (res.tokens != MASK).all() and res.steps_run <= 28 and res.forwards == res.steps_run
    assert per_step[0] == max(fixed[0], len(sure))  # every sure position in the first step
    assert all(t >= 1 for t in per_step)  # always at least the most confident one
    assert res.steps_run < len(fixed)


def test_threshold_picks_positions_within_the_block_only():
    sure = {6, 30}  # 30 lies in the second block
    params = DiffusionParams(steps=8, schedule=Schedule.BLOCK_BASED, block_length=16, threshold=0.9)
    first = []
    _run(params, _sure_logits(32, sure), eog=None, cb=lambda s, t, c: first.append(c.copy()) if s == 1 else None)
    assert first[0][6] != MASK and first[0][30] == MASK


def test_threshold_with_nothing_above_it_is_the_fixed_schedule():
    fn = synthetic_logits(32, V, 3, mask_token_id=MASK)
    for alg in (Algorithm.CONFIDENCE_BASED, Algorithm.MARGIN_BASED, Algorithm.ENTROPY_BASED):
        params = DiffusionParams(steps=7, algorithm=alg, seed=4)
        fixed = _run(params, fn, eog=None)
        cert_one = _run(dataclasses.replace(params, threshold=1.0), fn, eog=None)  # no flat row is certain
        assert (cert_one.tokens == fixed.tokens).all() and cert_one.forwards == fixed.forwards


def test_threshold_and_factor_fall_when_the_model_is_sure():
    """A lower threshold never runs more forwards on the same sure/unsure canvas."""
    peaks = np.zeros((32, V), dtype=np.float32)
    peaks[np.arange(32), 10 + np.arange(32)] = np.linspace(0.0, 12.0, 32)  # p from 1/300 to ~1
    peaks[:, MASK] = -30.0
    fn = lambda tokens: peaks.copy()  # noqa: E731
    forwards = [_run(DiffusionParams(steps=28, threshold=t), fn, eog=None).forwards for t in (0.99, 0.5, 0.05)]
    assert forwards == sorted(forwards, reverse=True) and forwards[-1] < forwards[0]
    factor = _run(DiffusionParams(steps=28, factor=1.0), fn, eog=None)
    assert factor.forwards < 28 and (factor.tokens != MASK).all()


@pytest.mark.parametrize("factor, cert, expected", [
    (1.0, [0.9, 0.8, 0.7], 2),     # bounds 1 - 1/(i+1): 0.5, 0.667, 0.75 -> the third fails
    (1.0, [0.9, 0.8, 0.76], 3),    # all pass
    (1.0, [0.2, 0.1], 0),          # none (widen still takes the most confident when the step has none)
    (3.0, [0.5, 0.3, 0.3, 0.3], 3),  # 1 - 3/(i+1): <= 0.25 for i <= 3, 0.4 for i = 4
    (0.5, [0.99, 0.82, 0.99], 1),  # 0.82 < 1 - 0.5/3: the second fails, the run ends there
    (1.0, [0.9, 0.8, 0.7, 0.7], 2),  # the leading run only
])
def test_factor_rule_counts_like_fast_dllm(factor, cert, expected):
    assert ParallelRule(0.0, factor).count(np.array(cert)) == expected


def test_threshold_rule_counts_and_widens():
    rule = ParallelRule(0.6, 0.0)
    assert rule.count(np.array([0.9, 0.6, 0.59])) == 2 and rule.count(np.array([0.1])) == 0
    assert rule.count(np.array([])) == 0
    cert = np.array([0.1, 0.95, 0.2, 0.7, 0.7])
    assert rule.widen(np.array([2]), cert).tolist() == [1, 2, 3, 4]
    low = np.array([0.1, 0.3, 0.3])
    assert rule.widen(np.array([0]), low).tolist() == [0]  # the schedule's pick alone
    assert rule.widen(np.array([], dtype=np.int64), low).tolist() == [1]  # never an empty step


@pytest.mark.parametrize("field, value", [("threshold", -0.1), ("threshold", 1.5), ("threshold", float("nan")),
                                          ("factor", -1.0), ("factor", float("inf")), ("early_stop", 1),
                                          ("early_stop", "yes"), ("threshold", "0.5")])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ParameterError) as info:
        validate_params(dataclasses.replace(DiffusionParams(), **{field: value}))
    assert info.value.param == field and field in str(info.value)


def test_threshold_and_factor_together_and_without_a_confidence_are_refused():
    with pytest.raises(ParameterError, match="not both") as info:
        validate_params(DiffusionParams(threshold=0.9, factor=1.0))
    assert info.value.param == "factor"
    for alg in (Algorithm.ORIGIN, Algorithm.RANDOM):
        for field in ("threshold", "factor"):
            with pytest.raises(ParameterError, match=alg.name) as info:
                validate_params(DiffusionParams(algorithm=alg, **{field: 0.5}))
            assert info.value.param == field
