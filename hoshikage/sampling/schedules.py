"""Transfer schedules: how many masked positions each step unmasks.

Mirrors ``calculate_transfer_count`` and ``get_num_transfer_tokens`` in
examples/diffusion/diffusion.cpp, plus the block layout ``diffusion_generate`` uses, with
argument checks that name the offending parameter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .params import Algorithm, DiffusionParams, Schedule

__all__ = ["timestep_transfer_count", "get_num_transfer_tokens", "BlockPlan",
           "plan_block_schedule", "validate_params"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def timestep_transfer_count(step: int, total_steps: int, remaining: int, eps: float) -> int:
    """Dream/RND1 timestep schedule, in float32 as the C computes it.

    ``t = 1 - step/T*(1-eps)``, ``s = 1 - (step+1)/T*(1-eps)``, transfer
    ``(int32)(remaining * (1 - s/t))`` -- all of ``remaining`` at the last step.
    """
    f = np.float32
    one, e = f(1.0), f(eps)
    t = one - f(step) / f(total_steps) * (one - e)
    s = one - f(step + 1) / f(total_steps) * (one - e)
    p = (one - s / t) if step < total_steps - 1 else one
    return int(np.trunc(f(remaining) * p))


def get_num_transfer_tokens(mask_count: int, steps: int) -> list[int]:
    """LLaDA's even split of a block's masks over its steps, remainder to the first steps."""
    base, rem = divmod(mask_count, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


@dataclass(frozen=True)
class BlockPlan:
    """Block layout of a canvas, as diffusion_generate lays it out.

    Block ``b`` covers ``[n_prompt + b*block_length, min(that + block_length, canvas))``:
    blocks start after the prompt but their count comes from the whole canvas, so with a
    prompt the last block is cut short (or empty; its steps then do nothing).
    """

    canvas_length: int  # the canvas the plan needs (rounded up when adjusting)
    steps: int  # total steps (rounded up to a multiple of num_blocks when adjusting)
    block_length: int
    num_blocks: int
    steps_per_block: int
    blocks: tuple[tuple[int, int], ...]
    notes: tuple[str, ...] = ()


def plan_block_schedule(canvas_length: int, n_prompt: int, steps: int, block_length: int,
                        adjust: bool = False) -> BlockPlan:
    """Validate (or, with ``adjust``, round up) a block schedule.

    Raises ValueError naming the parameter when ``block_length`` or ``steps`` is not
    positive, the canvas is not a multiple of ``block_length``, or ``steps`` is not a
    multiple of the number of blocks. With ``adjust=True`` the last two are rounded up
    instead and ``notes`` says what changed; growing the canvas is the caller's job
    (``canvas_length`` in the result is the length needed).
    """
    block_length = _check_int("block_length", block_length, 1)
    steps = _check_int("steps", steps, 1)
    canvas_length = _check_int("canvas_length", canvas_length, 1)
    n_prompt = _check_int("n_prompt", n_prompt, 0)
    if n_prompt >= canvas_length:
        raise ValueError(f"canvas_length ({canvas_length}) must exceed the prompt length "
                         f"n_prompt ({n_prompt})")
    notes = []
    if canvas_length % block_length:
        if not adjust:
            raise ValueError(f"canvas_length ({canvas_length}, prompt included) must be a "
                             f"multiple of block_length ({block_length})")
        new = -(-canvas_length // block_length) * block_length
        notes.append(f"canvas_length {canvas_length} -> {new} (a multiple of block_length "
                     f"{block_length})")
        canvas_length = new
    num_blocks = canvas_length // block_length
    if steps % num_blocks:
        if not adjust:
            raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks "
                             f"({num_blocks} = {canvas_length} // block_length {block_length})")
        new = -(-steps // num_blocks) * num_blocks
        notes.append(f"steps {steps} -> {new} (a multiple of the {num_blocks} blocks)")
        steps = new
    blocks = tuple((n_prompt + b * block_length, min(n_prompt + (b + 1) * block_length,
                                                     canvas_length)) for b in range(num_blocks))
    return BlockPlan(canvas_length, steps, block_length, num_blocks, steps // num_blocks,
                     blocks, tuple(notes))


def validate_params(params: DiffusionParams) -> None:
    """Check every field of ``params``; raises ValueError naming the field and value."""
    if not isinstance(params, DiffusionParams):
        raise ValueError(f"params must be a DiffusionParams, got {type(params).__name__}")
    _check_int("steps", params.steps, 1)
    try:
        Algorithm(params.algorithm)
    except ValueError:
        raise ValueError(f"algorithm must be one of {[a.name for a in Algorithm]}, "
                         f"got {params.algorithm!r}") from None
    try:
        Schedule(params.schedule)
    except ValueError:
        raise ValueError(f"schedule must be one of {[s.name for s in Schedule]}, "
                         f"got {params.schedule!r}") from None
    if Schedule(params.schedule) == Schedule.TIMESTEP_BASED:
        eps = _check_float("eps", params.eps)
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
    else:
        _check_int("block_length", params.block_length, 1)
    if _check_float("temperature", params.temperature) < 0.0:
        raise ValueError(f"temperature must be >= 0, got {params.temperature}")
    top_p = _check_float("top_p", params.top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    _check_int("top_k", params.top_k, 0)
    if params.top_k > 2**31 - 1:
        raise ValueError(f"top_k must fit an int32, got {params.top_k}")
    if _check_float("alg_temp", params.alg_temp) < 0.0:
        raise ValueError(f"alg_temp must be >= 0, got {params.alg_temp}")
    if _check_float("cfg_scale", params.cfg_scale) < 0.0:
        raise ValueError(f"cfg_scale must be >= 0, got {params.cfg_scale}")
    if not isinstance(params.add_gumbel_noise, (bool, np.bool_)):
        raise ValueError(f"add_gumbel_noise must be a bool, got {params.add_gumbel_noise!r}")
    if not isinstance(params.corrected, (bool, np.bool_)):
        raise ValueError(f"corrected must be a bool, got {params.corrected!r}")
    from .random import normalize_seed
    normalize_seed(params.seed)
