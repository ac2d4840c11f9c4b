"""Diffusion sampler parameters (pure data; validated before anything reaches C)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Algorithm(IntEnum):
    """Which masked positions are unmasked first (llama.cpp's ``diffusion_algorithm``)."""

    ORIGIN = 0
    ENTROPY_BASED = 1
    MARGIN_BASED = 2
    RANDOM = 3
    CONFIDENCE_BASED = 4


class Schedule(IntEnum):
    """How many positions are unmasked per step (llama.cpp's ``diffusion_transfer_schedule``)."""

    TIMESTEP_BASED = 0  # Dream / RND1: (1 - s/t) of the remaining masks, with eps
    BLOCK_BASED = 1  # LLaDA: semi-autoregressive blocks, equal transfer counts per block


@dataclass(frozen=True)
class DiffusionParams:
    """Everything the diffusion loop needs besides the model.

    steps:            total denoising steps over the whole canvas (all blocks together).
    algorithm:        confidence measure used to pick which positions to unmask.
    schedule:         TIMESTEP_BASED (uses ``eps``) or BLOCK_BASED (uses ``block_length``).
    eps:              timestep schedule's end point, in (0, 1); ignored by the block schedule.
    block_length:     tokens per block for BLOCK_BASED; the canvas (prompt included) must be a
                      multiple of it and ``steps`` a multiple of the number of blocks.
    temperature:      token temperature; 0 leaves llama.cpp's chain without a temp stage.
    top_k, top_p:     token filters (0 / 1.0 = off), applied top_k -> top_p -> temp -> dist.
    alg_temp:         > 0 samples positions by confidence/alg_temp instead of taking the top ones.
    cfg_scale:        > 0 enables classifier-free guidance (a second pass with the prompt masked).
    add_gumbel_noise: LLaDA's gumbel perturbation of the logits (only when temperature > 0).
    seed:             seeds every random stream, as llama.cpp does.
    corrected:        False reproduces llama.cpp's reference bit for bit, defects included;
                      True follows the published LLaDA / Dream algorithms (docs/diffusion.md).
    """

    steps: int = 50
    algorithm: Algorithm = Algorithm.CONFIDENCE_BASED
    schedule: Schedule = Schedule.TIMESTEP_BASED
    eps: float = 1e-3
    block_length: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    alg_temp: float = 0.0
    cfg_scale: float = 0.0
    add_gumbel_noise: bool = False
    seed: int = 0
    corrected: bool = False
