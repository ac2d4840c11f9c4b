"""Transfer schedules and parameter validation."""
from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hoshikage.sampling import (DiffusionParams, Schedule, get_num_transfer_tokens,
                                plan_block_schedule, timestep_transfer_count, validate_params)


def test_timestep_counts_match_llama_cpp(loop_lib):
    rng = np.random.default_rng(0)
    for _ in range(3000):
        total = int(rng.integers(1, 300))
        step = int(rng.integers(0, total))
        remaining = int(rng.integers(0, 5000))
        eps = float(np.float32(rng.choice([1e-3, 1e-5, 0.1, 0.5, rng.random()])))
        ref = loop_lib.hk_transfer_count(step, total, remaining, 0, eps)
        assert timestep_transfer_count(step, total, remaining, eps) == ref


def test_block_counts_match_llama_cpp(loop_lib):
    for mask_count in (0, 1, 7, 32, 33, 100):
        for steps in (1, 2, 3, 8, 64):
            out = (ctypes.c_int32 * steps)()
            loop_lib.hk_num_transfer_tokens(mask_count, steps, out)
            assert get_num_transfer_tokens(mask_count, steps) == list(out)


@given(st.integers(0, 10_000), st.integers(1, 500))
def test_block_counts_sum(mask_count, steps):
    counts = get_num_transfer_tokens(mask_count, steps)
    assert sum(counts) == mask_count and max(counts) - min(counts) <= 1


@settings(max_examples=200)
@given(st.integers(1, 200), st.integers(0, 2000), st.sampled_from([1e-3, 1e-4, 0.05]))
def test_timestep_last_step_takes_all(total, remaining, eps):
    assert timestep_transfer_count(total - 1, total, remaining, eps) == remaining
    left = remaining
    for step in range(total):
        n = timestep_transfer_count(step, total, left, eps)
        assert 0 <= n <= left
        left -= n
    assert left == 0


def test_plan_block_schedule():
    plan = plan_block_schedule(64, 5, 8, 16)
    assert plan.num_blocks == 4 and plan.steps_per_block == 2
    # blocks start after the prompt, as diffusion_generate lays them out: the last is short
    assert plan.blocks == ((5, 21), (21, 37), (37, 53), (53, 64))
    assert plan_block_schedule(64, 20, 8, 16).blocks[-1] == (68, 64)  # starts past the end: empty
    with pytest.raises(ValueError, match=r"canvas_length \(60.*block_length \(16\)"):
        plan_block_schedule(60, 5, 8, 16)
    with pytest.raises(ValueError, match=r"steps \(6\).*4"):
        plan_block_schedule(64, 5, 6, 16)
    with pytest.raises(ValueError, match="block_length must be >= 1, got 0"):
        plan_block_schedule(64, 5, 8, 0)
    with pytest.raises(ValueError, match="steps must be >= 1, got -2"):
        plan_block_schedule(64, 5, -2, 16)
    adj = plan_block_schedule(60, 5, 6, 16, adjust=True)
    assert (adj.canvas_length, adj.steps, adj.num_blocks) == (64, 8, 4)
    assert len(adj.notes) == 2 and "60 -> 64" in adj.notes[0] and "6 -> 8" in adj.notes[1]
    assert plan_block_schedule(64, 5, 8, 16, adjust=True).notes == ()


@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("steps", 2.5), ("eps", 0.0), ("eps", 1.0), ("eps", float("nan")),
    ("temperature", -0.1), ("temperature", float("inf")), ("top_p", 0.0), ("top_p", 1.5),
    ("top_k", -1), ("alg_temp", -1.0), ("alg_temp", float("nan")), ("cfg_scale", -0.5),
    ("cfg_scale", float("inf")), ("algorithm", 7), ("schedule", 5), ("seed", 2**40),
    ("block_length", 0),
])
def test_validation_names_the_field(field, value):
    base = DiffusionParams(schedule=Schedule.BLOCK_BASED if field == "block_length"
                           else Schedule.TIMESTEP_BASED)
    with pytest.raises(ValueError, match=field):
        validate_params(dataclasses.replace(base, **{field: value}))


def test_defaults_are_valid():
    validate_params(DiffusionParams())
    validate_params(DiffusionParams(schedule=Schedule.BLOCK_BASED, eps=0.0))  # eps unused
