"""Parallel decoding: a step unmasks more positions than its schedule asks when the model is sure.

The rules are Fast-dLLM's (NVlabs/Fast-dLLM, ``llada/generate.py``):

* ``get_transfer_index`` with ``threshold``: the most confident masked position, and every other
  one whose confidence is at least ``threshold``;
* ``get_transfer_index_dynamic`` (the factor rule): with the masked confidences sorted,
  c_1 >= c_2 >= ..., the leading n positions with ``c_i >= 1 - factor / (i + 1)`` for every
  i <= n (c_1 always). The code takes all the masked positions when only the last one fails its
  bound (``if top_i == 0 or top_i == len(threshs) - 1: top_i += 1``); this rule does not.

Fast-dLLM then repeats steps until the block is full. Here the schedule's count stays a floor:
the positions a rule picks are added to those the schedule picks, so a run takes at most
``steps`` steps and ends a block (or the canvas) early once its masks are gone. The most
confident position is forced only into a step the schedule gives none (Fast-dLLM forces it
always; with CONFIDENCE_BASED and a count >= 1 the schedule has picked it already).

"Confidence" is a certainty in [0, 1] per algorithm (``certainty``): CONFIDENCE_BASED the
probability of the sampled token (Fast-dLLM's ``x0_p``); MARGIN_BASED the gap between the two
most likely tokens' probabilities (in both modes: the reference's margin reads token ids 0 and 1);
ENTROPY_BASED ``exp(-H)`` (1 for a certain position, 1/V for a uniform one). ORIGIN and RANDOM
rank by nothing the model says, so they take no threshold or factor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from .confidence import top2_margin
from .filters import Candidates, DistResult
from .params import Algorithm, DiffusionParams

__all__ = ["ParallelRule", "parallel_rule", "check_parallel", "certainty"]


def check_parallel(params: DiffusionParams) -> None:
    """ParameterError naming the field when threshold and factor are both on, or when the
    algorithm has no confidence to compare (their ranges are checked with the declarations)."""
    threshold, factor = float(params.threshold), float(params.factor)
    if threshold > 0 and factor > 0:
        raise ParameterError(f"give threshold or factor, not both (threshold={params.threshold}, "
                             f"factor={params.factor})", "factor")
    if (threshold > 0 or factor > 0) and Algorithm(params.algorithm) in (Algorithm.ORIGIN, Algorithm.RANDOM):
        name = "threshold" if threshold > 0 else "factor"
        raise ParameterError(f"{name} needs a confidence, and algorithm {Algorithm(params.algorithm).name} has "
                             "none; use CONFIDENCE_BASED, MARGIN_BASED or ENTROPY_BASED", name)


def certainty(algorithm: Algorithm, c: Candidates, d: DistResult, conf) -> np.ndarray:
    """Each row's certainty, float64 [r] in [0, 1] (see the module docstring). ``conf`` is what
    the step computed for ranking: ENTROPY's ±H (float32 [r]) or its (approx, radius) bounds."""
    if algorithm == Algorithm.CONFIDENCE_BASED:
        return d.p_at(d.selected).astype(np.float64)
    if algorithm == Algorithm.MARGIN_BASED:
        return top2_margin(c, d).astype(np.float64)
    if algorithm == Algorithm.ENTROPY_BASED:
        h = conf[0] if isinstance(conf, tuple) else conf  # +H (reference) or -H (corrected)
        return np.exp(-np.abs(np.asarray(h, dtype=np.float64)))
    raise ValueError(f"algorithm {algorithm!r} has no certainty")


@dataclass(frozen=True)
class ParallelRule:
    """threshold > 0 or factor > 0 (one of them)."""

    threshold: float
    factor: float

    def count(self, ordered: np.ndarray) -> int:
        """How many of the positions with certainties ``ordered`` (float64 [n], descending) the
        rule unmasks: the leading run that passes (threshold: c_i >= threshold; factor:
        c_i >= 1 - factor / (i + 1), i from 1)."""
        n = ordered.size
        if self.threshold > 0:
            passing = ordered >= self.threshold
        else:
            passing = ordered >= 1.0 - self.factor / (np.arange(n) + 2.0)
        fails = np.flatnonzero(~passing)
        return int(fails[0]) if fails.size else n

    def widen(self, chosen: np.ndarray, cert: np.ndarray) -> np.ndarray:
        """The schedule's ``chosen`` (indices into the masked list) with the rule's picks added:
        the ``count`` most certain of ``cert`` (float64 [n]), ties to the earlier position; the
        most certain one when that would leave the step with nothing (Fast-dLLM always takes it;
        a schedule count >= 1 already does for CONFIDENCE_BASED)."""
        order = np.argsort(-cert, kind="stable")
        m = self.count(cert[order])
        return np.union1d(chosen, order[:max(m, 1 if chosen.size == 0 else 0)])


def parallel_rule(params: DiffusionParams) -> ParallelRule | None:
    """The rule ``params`` ask for, or None (both 0)."""
    threshold, factor = float(params.threshold), float(params.factor)
    return ParallelRule(threshold, factor) if threshold > 0 or factor > 0 else None
