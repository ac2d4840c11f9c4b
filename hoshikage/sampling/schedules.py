"""Transfer schedules: how many masked positions each step unmasks.

Mirrors ``calculate_transfer_count`` and ``get_num_transfer_tokens`` in
examples/diffusion/diffusion.cpp, plus the block layout ``diffusion_generate`` uses, with
argument checks that name the offending parameter (ParameterError).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from .parallel import check_parallel
from .params import DIFFUSION_PARAMS, SHARED, DiffusionParams
from .rows import check_cache

__all__ = ["timestep_transfer_count", "get_num_transfer_tokens", "BlockPlan",
           "plan_block_schedule", "validate_params", "check_run_args"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}", name)
    if value < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {value}", name)
    return int(value)


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
        raise ParameterError(f"canvas_length ({canvas_length}) must exceed the prompt length "
                             f"n_prompt ({n_prompt})", "canvas_length")
    notes = []
    if canvas_length % block_length:
        if not adjust:
            raise ParameterError(f"canvas_length ({canvas_length}, prompt included) must be a "
                                 f"multiple of block_length ({block_length})", "block_length")
        new = -(-canvas_length // block_length) * block_length
        notes.append(f"canvas_length {canvas_length} -> {new} (a multiple of block_length "
                     f"{block_length})")
        canvas_length = new
    num_blocks = canvas_length // block_length
    if steps % num_blocks:
        if not adjust:
            raise ParameterError(f"steps ({steps}) must be a multiple of the number of blocks "
                                 f"({num_blocks} = {canvas_length} // block_length {block_length})", "steps")
        new = -(-steps // num_blocks) * num_blocks
        notes.append(f"steps {steps} -> {new} (a multiple of the {num_blocks} blocks)")
        steps = new
    blocks = tuple((n_prompt + b * block_length, min(n_prompt + (b + 1) * block_length,
                                                     canvas_length)) for b in range(num_blocks))
    return BlockPlan(canvas_length, steps, block_length, num_blocks, steps // num_blocks,
                     blocks, tuple(notes))


def validate_params(params: DiffusionParams) -> None:
    """Check every field of ``params``; raises ParameterError naming the field and value."""
    if not isinstance(params, DiffusionParams):
        raise ParameterError(f"params must be a DiffusionParams, got {type(params).__name__}", "params")
    for p in DIFFUSION_PARAMS:  # declared in params.py; schedule is checked before the fields it picks
        if p.only_with is None or p.only_with == params.schedule:
            p.check(getattr(params, p.name))
    for name in ("temperature", "top_p", "top_k"):  # declared with the sampling parameters
        SHARED[name].check(getattr(params, name))
    if not isinstance(params.add_gumbel_noise, (bool, np.bool_)):
        raise ParameterError(f"add_gumbel_noise must be a bool, got {params.add_gumbel_noise!r}",
                             "add_gumbel_noise")
    if not isinstance(params.corrected, (bool, np.bool_)):
        raise ParameterError(f"corrected must be a bool, got {params.corrected!r}", "corrected")
    check_parallel(params)
    check_cache(params)
    from .random import normalize_seed
    normalize_seed(params.seed)


def check_run_args(prompt_tokens, canvas_length, mask_token_id, n_vocab, shift_logits) -> np.ndarray:
    """run_diffusion's arguments besides params; the prompt as int32, or ValueError naming the argument."""
    for name, v in (("canvas_length", canvas_length), ("mask_token_id", mask_token_id),
                    ("n_vocab", n_vocab)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if n_vocab < 1:
        raise ValueError(f"n_vocab must be >= 1, got {n_vocab}")
    if not 0 <= mask_token_id < n_vocab:
        raise ValueError(f"mask_token_id must be in [0, n_vocab={n_vocab}), got {mask_token_id}")
    prompt = np.asarray(prompt_tokens)
    if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt_tokens must be a non-empty 1-D sequence of integers, "
                         f"got shape {prompt.shape} dtype {prompt.dtype}")
    if prompt.min() < 0 or prompt.max() >= n_vocab:
        raise ValueError(f"prompt_tokens must be token ids in [0, {n_vocab}), got values in "
                         f"[{prompt.min()}, {prompt.max()}]")
    if canvas_length <= prompt.size:
        raise ValueError(f"canvas_length ({canvas_length}) must exceed the prompt length "
                         f"({prompt.size})")
    if canvas_length >= 2**31:
        raise ValueError(f"canvas_length must fit an int32, got {canvas_length}")
    if not isinstance(shift_logits, (bool, np.bool_)):
        raise ValueError(f"shift_logits must be a bool, got {shift_logits!r}")
    return prompt.astype(np.int32)
