"""The diffusion loop: invariants on synthetic logits, and token-for-token parity with
llama.cpp's diffusion_generate (compiled from the llama.cpp tree, fed the same logits)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import synthetic_logits
from hoshikage.sampling import diffusion as sampling_diffusion
from hoshikage.sampling import (CHUNK_ROWS, Algorithm, DiffusionParams, Schedule,
                                get_num_transfer_tokens, run_diffusion,
                                timestep_transfer_count)

V, MASK = 300, 299


def _run(params, *, canvas=24, prompt=(5, 6, 7, 8), fn=None, shift=False, cb=None, v=V):
    fn = fn or synthetic_logits(canvas, v, 0, mask_token_id=v - 1)
    return run_diffusion(list(prompt), canvas_length=canvas, mask_token_id=v - 1, n_vocab=v,
                         logits_fn=fn, params=params, shift_logits=shift, step_callback=cb)


def _read_only(fn):
    def wrapped(tokens):
        out = fn(tokens)
        out.setflags(write=False)  # as a view into llama.cpp's buffer must be treated
        return out
    return wrapped


@pytest.mark.parametrize("alg", list(Algorithm))
@pytest.mark.parametrize("sched", list(Schedule))
def test_prompt_kept_and_all_unmasked(alg, sched):
    params = DiffusionParams(steps=10, algorithm=alg, schedule=sched, block_length=12,
                             temperature=0.7, top_k=20, seed=3, add_gumbel_noise=True)
    fn = _read_only(synthetic_logits(24, V, 1, mask_token_id=MASK))
    res = _run(params, fn=fn, shift=True, prompt=(5,))  # shift + 1-token prompt: row 0 read
    assert res.tokens[0] == 5 and res.tokens.dtype == np.int32
    if not (alg == Algorithm.ORIGIN and sched == Schedule.BLOCK_BASED):
        assert (res.tokens != MASK).all()  # ORIGIN's Bernoulli draws may leave some in blocks
    assert not res.cancelled and res.steps_run >= 1
    assert res.decode_seconds >= 0 and res.sampling_seconds >= 0


def _mask_counts(params, **kw):
    seen = []
    res = _run(params, cb=lambda s, t, c: seen.append(int((c == MASK).sum())), **kw)
    return seen + [int((res.tokens == MASK).sum())], res


def test_timestep_transfer_counts_follow_schedule():
    params = DiffusionParams(steps=7, seed=1, eps=1e-3)
    counts, _ = _mask_counts(params, canvas=40)
    for step in range(7):
        assert counts[step] - counts[step + 1] == timestep_transfer_count(step, 7, counts[step], 1e-3)
    assert counts[-1] == 0


def test_block_transfer_counts_follow_schedule():
    params = DiffusionParams(steps=6, schedule=Schedule.BLOCK_BASED, block_length=12, seed=2)
    counts, res = _mask_counts(params, canvas=36, prompt=(1, 2, 3))
    per_step = np.diff(-np.array(counts))
    blocks = [(3, 15), (15, 27), (27, 36)]
    expect = []
    for s, e in blocks:
        expect += get_num_transfer_tokens(e - s, 2)
    assert per_step.tolist() == expect and counts[-1] == 0


def test_same_seed_same_tokens_and_seed_matters():
    p = DiffusionParams(steps=6, temperature=1.0, seed=42)
    a, b = _run(p), _run(p)
    assert (a.tokens == b.tokens).all()
    c = _run(dataclasses.replace(p, seed=43))
    assert not (a.tokens == c.tokens).all()


@pytest.mark.parametrize("sched", list(Schedule))
def test_cancel_stops_within_one_step(sched):
    calls = []
    base = synthetic_logits(24, V, 0, mask_token_id=MASK)

    def fn(tokens):
        calls.append(1)
        return base(tokens)

    params = DiffusionParams(steps=10, schedule=sched, block_length=12, seed=0)
    seen = []

    def cb(step, total, canvas):
        seen.append(canvas.copy())
        assert total == 10
        return False if step == 3 else None

    res = _run(params, fn=fn, cb=cb)
    assert res.cancelled and res.steps_run == 3 and len(calls) == 3
    assert (res.tokens == seen[-1]).all()  # nothing changed after the cancelling callback


def test_cfg_second_call_masks_the_prompt():
    seen = []
    base = synthetic_logits(20, V, 0, mask_token_id=MASK)

    def fn(tokens):
        seen.append(np.array(tokens))
        return base(tokens)

    _run(DiffusionParams(steps=2, cfg_scale=1.0), canvas=20, fn=_read_only(fn))
    assert len(seen) == 4
    assert (seen[0][:4] == [5, 6, 7, 8]).all() and (seen[1][:4] == MASK).all()
    assert (seen[0][4:] == seen[1][4:]).all()


def test_bad_arguments_name_the_parameter():
    p = DiffusionParams(steps=2)
    fn = synthetic_logits(8, V, 0)
    with pytest.raises(ValueError, match="canvas_length"):
        run_diffusion([1, 2], canvas_length=2, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                      params=p, shift_logits=False)
    with pytest.raises(ValueError, match="mask_token_id"):
        run_diffusion([1], canvas_length=8, mask_token_id=V, n_vocab=V, logits_fn=fn,
                      params=p, shift_logits=False)
    with pytest.raises(ValueError, match="prompt_tokens"):
        run_diffusion([V + 3], canvas_length=8, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                      params=p, shift_logits=False)
    with pytest.raises(ValueError, match="prompt_tokens"):
        run_diffusion([], canvas_length=8, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                      params=p, shift_logits=False)
    with pytest.raises(ValueError, match="logits_fn"):
        run_diffusion([1], canvas_length=8, mask_token_id=MASK, n_vocab=V,
                      logits_fn=lambda t: np.zeros((8, V)), params=p, shift_logits=False)
    with pytest.raises(ValueError, match="block_length"):
        run_diffusion([1], canvas_length=8, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                      params=DiffusionParams(steps=2, schedule=Schedule.BLOCK_BASED,
                                             block_length=3), shift_logits=False)
    with pytest.raises(ValueError, match="top_p"):
        run_diffusion([1], canvas_length=8, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                      params=DiffusionParams(top_p=0.0), shift_logits=False)
    for threads in (0, 2.0, True):
        with pytest.raises(ValueError, match="threads"):
            run_diffusion([1], canvas_length=8, mask_token_id=MASK, n_vocab=V, logits_fn=fn,
                          params=p, shift_logits=False, threads=threads)


def test_guidance_time_is_reported_apart_from_sampling():
    fn = synthetic_logits(24, V, 5, mask_token_id=MASK)
    plain = _run(DiffusionParams(steps=4, seed=1), fn=fn)
    guided = _run(DiffusionParams(steps=4, seed=1, cfg_scale=0.5), fn=fn)
    assert plain.guidance_seconds == 0.0
    assert guided.guidance_seconds > 0.0 and guided.sampling_seconds > 0.0


def _two_position_logits(canvas):
    """Position 2 is sure of token 1, position 3 hesitates over many: entropy and margin
    should unmask position 2 first (the reference, defects b and c, does otherwise)."""
    L = np.full((canvas, V), -20.0, dtype=np.float32)
    L[:, MASK] = -30.0
    L[2, 1] = 5.0
    L[2, 2:40] = 0.0
    L[3, :60] = np.linspace(0.5, 0.0, 60, dtype=np.float32)
    L[3, 1] = 0.9  # id-order margin p(0) - p(1) is negative here
    return lambda tokens: L


@pytest.mark.parametrize("alg", [Algorithm.ENTROPY_BASED, Algorithm.MARGIN_BASED])
def test_corrected_confidence_prefers_the_sure_position(alg):
    fn = _two_position_logits(4)
    for corrected, first in ((False, 3), (True, 2)):
        p = DiffusionParams(steps=2, algorithm=alg, corrected=corrected,
                            schedule=Schedule.BLOCK_BASED, block_length=4)
        seen = []
        _run(p, canvas=4, prompt=(5, 6), fn=fn, cb=lambda s, t, c: seen.append(c.copy()))
        res_first_step = seen[1]  # canvas after step 0 (one position unmasked)
        assert (res_first_step != MASK).sum() == 3
        assert res_first_step[first] != MASK, (alg, corrected)


def test_corrected_alg_temp_samples_without_replacement():
    p = DiffusionParams(steps=4, schedule=Schedule.BLOCK_BASED, block_length=16, alg_temp=0.3,
                        seed=5, corrected=True)
    counts, res = _mask_counts(p, canvas=32, prompt=(1, 2, 3, 4))
    assert counts[-1] == 0  # every planned transfer hit a distinct position
    # the reference draws with replacement, so repeats leave masks behind
    ref_left = [_mask_counts(dataclasses.replace(p, corrected=False, seed=s), canvas=32,
                             prompt=(1, 2, 3, 4))[0][-1] for s in range(6)]
    assert max(ref_left) > 0


def test_corrected_gumbel_perturbs_every_row():
    p = DiffusionParams(steps=4, temperature=1.0, add_gumbel_noise=True, seed=9)
    fn = _read_only(synthetic_logits(24, V, 0, mask_token_id=MASK))
    a = _run(p, fn=fn)
    b = _run(dataclasses.replace(p, corrected=True), fn=fn)
    assert (a.tokens != MASK).all() and (b.tokens != MASK).all()
    assert not (a.tokens == b.tokens).all()


# --- parity with llama.cpp's diffusion_generate --------------------------------------------

def _random_case(i):
    rng = np.random.default_rng(1000 + i)
    v = int(rng.choice([50, 300, 300, 5000]))
    sched = Schedule(int(rng.integers(0, 2)))
    n_prompt = int(rng.integers(1, 6))
    bl = int(rng.choice([4, 8]))
    if sched == Schedule.TIMESTEP_BASED:
        canvas = int(rng.integers(n_prompt + 2, 24))
        steps = int(rng.integers(1, 9))
    else:
        canvas = bl * int(rng.integers(1, 4))
        if canvas <= n_prompt:
            canvas += bl
        steps = (canvas // bl) * int(rng.integers(1, 4))
    params = DiffusionParams(
        steps=steps, algorithm=Algorithm(int(rng.integers(0, 5))), schedule=sched,
        eps=float(rng.choice([1e-3, 0.1])), block_length=bl,
        temperature=float(rng.choice([0.0, 0.7, 1.0, 1.3])),
        top_k=int(rng.choice([0, 0, 3, 40, 200])), top_p=float(rng.choice([1.0, 1.0, 0.9, 0.5])),
        alg_temp=float(rng.choice([0.0, 0.0, 0.5])), cfg_scale=float(rng.choice([0.0, 0.0, 1.5])),
        add_gumbel_noise=bool(rng.random() < 0.3), seed=int(rng.integers(-(2**31), 2**31)))
    quant = [None, 0.5, 0.125][i % 3]
    prompt = rng.integers(0, v - 1, n_prompt)
    if sched == Schedule.TIMESTEP_BASED and i % 7 == 0:
        prompt[-1] = v - 1  # a mask token inside the prompt is denoised too (timestep only)
    return dict(prompt=prompt, canvas_length=canvas, n_vocab=v, mask_token_id=v - 1,
                params=params, logits_fn=synthetic_logits(canvas, v, i, quant),
                shift_logits=bool(rng.random() < 0.5))


EXPLICIT = [
    # chunks: more masked rows than CHUNK_ROWS, at a vocabulary where the fast paths run
    dict(prompt=[1, 2, 3], canvas_length=CHUNK_ROWS + 20, n_vocab=5000, mask_token_id=4999,
         params=DiffusionParams(steps=4, algorithm=Algorithm.ENTROPY_BASED, seed=1),
         logits_fn=synthetic_logits(CHUNK_ROWS + 20, 5000, 77), shift_logits=True),
    dict(prompt=[1, 2, 3], canvas_length=CHUNK_ROWS + 20, n_vocab=5000, mask_token_id=4999,
         params=DiffusionParams(steps=3, top_k=40, top_p=0.95, temperature=0.8, seed=2,
                                cfg_scale=0.5),
         logits_fn=synthetic_logits(CHUNK_ROWS + 20, 5000, 78, 0.25), shift_logits=False),
    # prompt longer than a block: the last block is empty and its steps do nothing
    dict(prompt=list(range(10)), canvas_length=24, n_vocab=300, mask_token_id=299,
         params=DiffusionParams(steps=6, schedule=Schedule.BLOCK_BASED, block_length=8, seed=3,
                                algorithm=Algorithm.ORIGIN, temperature=0.9),
         logits_fn=synthetic_logits(24, 300, 79), shift_logits=False),
    # gumbel with a 1-token prompt and shifted logits: row 0 is read, and perturbed
    dict(prompt=[7], canvas_length=12, n_vocab=300, mask_token_id=299,
         params=DiffusionParams(steps=4, add_gumbel_noise=True, temperature=0.6, seed=4,
                                algorithm=Algorithm.RANDOM),
         logits_fn=synthetic_logits(12, 300, 80), shift_logits=True),
]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("case", [_random_case(i) for i in range(48)] + EXPLICIT)
def test_parity_with_llama_cpp(loop_ref, case, threads, monkeypatch):
    if threads > 1:  # rows split between threads at every size, chunks of a few rows
        monkeypatch.setattr(sampling_diffusion, "_THREADED_MIN_VALUES", 0)
    ref, trace = loop_ref(**case)
    seen = []
    kw = {k: v for k, v in case.items() if k != "prompt"}
    res = run_diffusion(case["prompt"], **kw, step_callback=lambda s, t, c: seen.append((s, t)),
                        threads=threads)
    assert res.tokens.tolist() == ref.tolist()
    assert seen == trace  # same callback sequence (no cancellation)
