"""Token-sampling parameters shared by both kinds of model, checked before reaching C."""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace

from ..errors import ParameterError
from ..sampling.params import SHARED, SHARED_PARAMS

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1


def check_number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, integer: bool = False) -> None:
    """Raise ParameterError naming ``name`` unless ``value`` is a finite number in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ParameterError(f"{name} must be {kind}, got {value!r}", name)
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}", name)
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ParameterError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}", name)
    if hi is not None and value > hi:
        raise ParameterError(f"{name} must be <= {hi}, got {value!r}", name)


@dataclass(frozen=True)
class SamplingParams:
    """llama.cpp's sampler chain: penalties -> top_k -> top_p -> min_p -> temperature -> dist.

    temperature <= 0 means greedy (argmax). top_k 0, top_p 1.0 and min_p 0 switch those
    stages off. repeat_penalty 1.0 and repeat_last_n 0 switch the repetition penalty off
    (repeat_last_n -1 = the whole context). seed None picks a random seed, reported in
    the result's params so the run can be repeated. Defaults are llama.cpp's.
    """

    temperature: float = SHARED["temperature"].default
    top_k: int = SHARED["top_k"].default
    top_p: float = SHARED["top_p"].default
    min_p: float = SHARED["min_p"].default
    repeat_penalty: float = SHARED["repeat_penalty"].default
    repeat_last_n: int = SHARED["repeat_last_n"].default
    presence_penalty: float = SHARED["presence_penalty"].default
    frequency_penalty: float = SHARED["frequency_penalty"].default
    seed: int | None = SHARED["seed"].default

    def __post_init__(self) -> None:
        for p in SHARED_PARAMS:  # ranges declared in sampling/params.py
            p.check(getattr(self, p.name))

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def with_seed(self) -> SamplingParams:
        """A copy whose seed is concrete (random if it was None)."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(UINT32_MAX))
