"""Token-sampling parameters shared by both kinds of model, checked before reaching C."""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace

UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1


def check_number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, integer: bool = False) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite number in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")


@dataclass(frozen=True)
class SamplingParams:
    """llama.cpp's sampler chain: penalties -> top_k -> top_p -> min_p -> temperature -> dist.

    temperature <= 0 means greedy (argmax). top_k 0, top_p 1.0 and min_p 0 switch those
    stages off. repeat_penalty 1.0 and repeat_last_n 0 switch the repetition penalty off
    (repeat_last_n -1 = the whole context). seed None picks a random seed, reported in
    the result's params so the run can be repeated. Defaults are llama.cpp's.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, lo=0)
        check_number("top_k", self.top_k, lo=0, hi=INT32_MAX, integer=True)
        check_number("top_p", self.top_p, lo=0, hi=1, lo_open=True)
        check_number("min_p", self.min_p, lo=0, hi=1)
        check_number("repeat_penalty", self.repeat_penalty, lo=0, lo_open=True)
        check_number("repeat_last_n", self.repeat_last_n, lo=-1, hi=INT32_MAX, integer=True)
        check_number("presence_penalty", self.presence_penalty, lo=-2, hi=2)
        check_number("frequency_penalty", self.frequency_penalty, lo=-2, hi=2)
        if self.seed is not None:
            check_number("seed", self.seed, lo=0, hi=UINT32_MAX, integer=True)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def with_seed(self) -> SamplingParams:
        """A copy whose seed is concrete (random if it was None)."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(UINT32_MAX))
