"""Library validators raise ParameterError naming the field (the server maps it to its request field)."""
from __future__ import annotations

import pytest

from hoshikage import errors
from hoshikage.errors import ParameterError
from hoshikage.generation.params import SamplingParams, check_number
from hoshikage.sampling import DiffusionParams, Schedule
from hoshikage.sampling.random import normalize_seed
from hoshikage.sampling.schedules import plan_block_schedule, validate_params
from hoshikage.text_limits import MAX_CLASS_RUN, check_prompt_text


def param_of(call, *args, **kwargs) -> str:
    with pytest.raises(ParameterError) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, ValueError)  # callers catching ValueError still do
    return info.value.param


@pytest.mark.parametrize("field, value", [("temperature", -1.0), ("top_k", 1.5), ("top_p", 0.0), ("min_p", 2.0),
                                          ("repeat_penalty", float("inf")), ("repeat_last_n", -2),
                                          ("presence_penalty", 3.0), ("seed", 2**32)])
def test_sampling_params_name_the_field(field, value):
    assert param_of(SamplingParams, **{field: value}) == field


def test_check_number_names_its_argument():
    assert param_of(check_number, "max_tokens", 0, lo=1, integer=True) == "max_tokens"
    assert param_of(check_number, "max_tokens", float("nan")) == "max_tokens"


@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("algorithm", 9), ("schedule", 7), ("eps", 1.0), ("temperature", -0.5), ("top_p", 0.0),
    ("top_k", 2**31), ("alg_temp", float("inf")), ("cfg_scale", -1.0), ("add_gumbel_noise", 1),
    ("corrected", "yes"), ("seed", "x"),
])
def test_diffusion_params_name_the_library_field(field, value):
    assert param_of(validate_params, DiffusionParams(**{field: value})) == field


def test_block_length_is_named_by_the_block_schedule():
    assert param_of(validate_params, DiffusionParams(schedule=Schedule.BLOCK_BASED, block_length=0)) == "block_length"
    assert param_of(plan_block_schedule, 33, 1, 4, 8) == "block_length"  # 33 is no multiple of 8
    assert param_of(plan_block_schedule, 32, 1, 3, 8) == "steps"  # 3 steps over 4 blocks
    assert param_of(normalize_seed, -(2**31) - 1) == "seed"


def test_prompt_text_bounds_name_the_field_they_were_given():
    assert param_of(check_prompt_text, "x" * 10_000, 8, "messages") == "messages"
    assert param_of(check_prompt_text, "!" * (MAX_CLASS_RUN + 1), 10**6, "prompt") == "prompt"


def test_only_raised_exceptions_remain():
    assert not hasattr(errors, "DecodeAborted")  # Hoshikage sets no abort callback: code 2 cannot happen
    with pytest.raises(errors.DecodeError) as info:
        errors.check_decode(2)
    assert info.value.code == 2 and "aborted" in str(info.value)
    with pytest.raises(errors.NoSlotError):
        errors.check_decode(1)
    errors.check_decode(0)
