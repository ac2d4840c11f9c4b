"""Sampler parameters (pure data; validated before anything reaches C), declared once.

``SHARED_PARAMS`` (both kinds of model) and ``DIFFUSION_PARAMS`` are the one declaration of each
parameter: name, type, default, range, help, request field, setting and CLI flag (see
``declared.Param``). The library checks values with them; the server's request schema,
settings and registry defaults, and the CLI flags, are derived from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from .declared import Param, by_name

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1


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


def _shared(name: str, kind: type, default: object, help: str, flag: str, *, setting: bool = True,
            **kw: object) -> Param:
    return Param(name, kind, default, help, request=name, setting=name if setting else None,
                 flags=(flag,), **kw)


# llama.cpp's defaults (SamplingParams); the server's own defaults are setting_default.
SHARED_PARAMS: tuple[Param, ...] = (
    _shared("temperature", float, 0.8, "Sampling temperature; 0 is greedy.", "--temp", lo=0, hi=10,
            setting_default=0.2),
    _shared("top_p", float, 0.95, "Nucleus sampling; 1.0 turns it off.", "--top-p", lo=0, hi=1, lo_open=True,
            setting_default=0.8),
    _shared("top_k", int, 40, "Top-k filter; 0 turns it off.", "--top-k", lo=0, hi=INT32_MAX),
    _shared("min_p", float, 0.05, "Min-p filter; 0 turns it off (autoregressive only).", "--min-p", lo=0, hi=1,
            setting=False, autoregressive_only=True),
    _shared("repeat_penalty", float, 1.0, "Repeat penalty; 1.0 is off (autoregressive only).", "--repeat-penalty",
            lo=0, lo_open=True, autoregressive_only=True),
    _shared("repeat_last_n", int, 64, "Tokens the repeat penalty looks back over; 0 is off, -1 the whole "
            "context; at most N_CTX (autoregressive only).", "--repeat-last-n", lo=-1, hi=INT32_MAX,
            autoregressive_only=True),
    _shared("presence_penalty", float, 0.0, "Presence penalty (autoregressive only).", "--presence-penalty",
            lo=-2, hi=2, setting=False, autoregressive_only=True),
    _shared("frequency_penalty", float, 0.0, "Frequency penalty (autoregressive only).", "--frequency-penalty",
            lo=-2, hi=2, setting=False, autoregressive_only=True),
    Param("seed", int, None, "Seeds every random stream; same seed, same answer (default: random; 0 for "
          "diffusion).", lo=0, hi=UINT32_MAX, request="seed", flags=("-s", "--seed")),
)


def _diffusion(name: str, kind: type, default: object, help: str, *, setting: bool = True, **kw: object) -> Param:
    return Param(name, kind, default, help, request=f"diffusion_{name}",
                 setting=f"diffusion_{name}" if setting else None,
                 flags=(f"--diffusion-{name.replace('_', '-')}",), **kw)


DIFFUSION_PARAMS: tuple[Param, ...] = (
    _diffusion("steps", int, 50, "Denoising steps, all blocks together; more is better and slower.",
               lo=1, hi=100_000),
    _diffusion("algorithm", Algorithm, Algorithm.CONFIDENCE_BASED, "Which masked positions are unmasked first "
               "(a number or a name)."),
    _diffusion("schedule", Schedule, Schedule.TIMESTEP_BASED, "How many positions each step unmasks: "
               "TIMESTEP_BASED uses eps, BLOCK_BASED the block length (a number or a name).",
               aliases=(("TIMESTEP", Schedule.TIMESTEP_BASED), ("BLOCK", Schedule.BLOCK_BASED))),
    _diffusion("eps", float, 1e-3, "Timestep schedule's end point.", lo=0, hi=1, lo_open=True, hi_open=True,
               only_with=Schedule.TIMESTEP_BASED),
    _diffusion("block_length", int, 32, "Block schedule's block length in tokens.", lo=1,
               only_with=Schedule.BLOCK_BASED),
    _diffusion("alg_temp", float, 0.0, "Algorithm temperature; > 0 samples positions instead of taking the "
               "most confident.", lo=0),
    _diffusion("cfg_scale", float, 0.0, "Classifier-free guidance; > 0 enables it (a second pass per step).",
               lo=0),
    # Fewer forwards (docs/diffusion.md, "Fewer forwards"); the rules are in sampling/parallel.py.
    _diffusion("threshold", float, 0.0, "Parallel decoding (Fast-dLLM): each step also unmasks every masked "
               "position whose confidence is at least this, so steps becomes a ceiling; 0 turns it off.",
               lo=0, hi=1),
    _diffusion("factor", float, 0.0, "Parallel decoding, Fast-dLLM's factor rule: each step also unmasks the n "
               "most confident positions while (n + 1) * (1 - confidence of the n-th) <= factor; 0 turns it off.",
               lo=0),
    # No setting: on wherever Hoshikage decides; hoshikage generate turns it off (llama-diffusion-cli's output).
    _diffusion("early_stop", bool, True, "Stop once the answer (the canvas up to the first end-of-generation "
               "token) is decided: the same answer in fewer forwards; the rest of the canvas stays masked.",
               setting=False),
    # The prefix KV cache (docs/diffusion.md, "Prefix cache"); the llama.cpp side is generation/prefix_cache.py.
    _diffusion("cache", str, None, "prefix: reuse the prompt's and finished blocks' keys and values while a block "
               "is denoised (block schedule, LLaDA / Dream; faster, not bit-identical); unset: every step "
               "recomputes the whole canvas.", choices=("prefix",)),
    _diffusion("cache_refresh", int, 0, "With the prefix cache, also recompute the whole canvas every this many "
               "steps inside a block (fresher, slower); 0: only at each block's first step.", lo=0, hi=100_000),
)
SHARED, DIFFUSION = by_name(SHARED_PARAMS), by_name(DIFFUSION_PARAMS)


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
    threshold:        > 0: a step also unmasks every masked position (of the block, or the canvas
                      for the timestep schedule) whose confidence is >= threshold (sampling/parallel.py).
    factor:           > 0: Fast-dLLM's factor rule instead of a threshold (not both).
    early_stop:       stop once the answer is decided (needs the end-of-generation ids; the
                      answer is unchanged, positions after it may stay masked).
    cache:            None (every step decodes the whole canvas: the reference) or "prefix" (the
                      block schedule's prefix KV cache; generation/prefix_cache.py).
    cache_refresh:    with the cache, > 0 also decodes the whole canvas every that many steps.
    add_gumbel_noise: LLaDA's gumbel perturbation of the logits (only when temperature > 0).
    seed:             seeds every random stream, as llama.cpp does.
    corrected:        False reproduces llama.cpp's reference bit for bit, defects included;
                      True follows the published LLaDA / Dream algorithms (docs/diffusion.md).
    """

    steps: int = DIFFUSION["steps"].default
    algorithm: Algorithm = DIFFUSION["algorithm"].default
    schedule: Schedule = DIFFUSION["schedule"].default
    eps: float = DIFFUSION["eps"].default
    block_length: int = DIFFUSION["block_length"].default
    # The shared filters are off by default here (llama.cpp's diffusion defaults), unlike SamplingParams.
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    alg_temp: float = DIFFUSION["alg_temp"].default
    cfg_scale: float = DIFFUSION["cfg_scale"].default
    threshold: float = DIFFUSION["threshold"].default
    factor: float = DIFFUSION["factor"].default
    early_stop: bool = DIFFUSION["early_stop"].default
    cache: str | None = DIFFUSION["cache"].default
    cache_refresh: int = DIFFUSION["cache_refresh"].default
    add_gumbel_noise: bool = False
    seed: int = 0
    corrected: bool = False
