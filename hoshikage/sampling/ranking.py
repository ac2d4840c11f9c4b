"""Choosing the ``k`` most confident positions without computing every confidence exactly.

With ``alg_temp == 0`` the loop keeps the first ``k`` positions of a stable descending sort
of the confidences: only *which* positions make the cut matters, not the values. When each
confidence is known to lie in an interval ``[lo, hi]``:

* a position is surely in when fewer than ``k`` others could rank above it (``hi_j >= lo_i``);
* it is surely out when at least ``k`` others surely rank above it (``lo_j > hi_i``).

Only the rest need exact values. The chosen set is then the surely-in positions plus the
best of the undecided ones, by exact value with ties to the lower index -- the same set as
the full stable sort: every undecided position that makes the true cut outranks every one
that does not.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from .random import MT19937Stream

__all__ = ["split_by_bounds", "top_k_by_bounds", "without_replacement"]


def split_by_bounds(approx: np.ndarray, radius: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(surely_in, undecided) boolean masks [n] for the top ``k`` (0 < k < n) of values known
    to lie within ``approx +- radius`` (float64 [n]; a NaN approx or radius counts as
    unknown)."""
    bad = ~(np.isfinite(approx) & (radius >= 0))
    lo = np.where(bad, -np.inf, approx - radius)
    hi = np.where(bad, np.inf, approx + radius)
    n = approx.size
    could_outrank = n - np.searchsorted(np.sort(hi), lo, side="left") - 1  # j != i with hi_j >= lo_i
    outranked = n - np.searchsorted(np.sort(lo), hi, side="right")  # j with lo_j > hi_i
    surely_in = could_outrank < k
    return surely_in, ~surely_in & (outranked < k)


def top_k_by_bounds(approx: np.ndarray, radius: np.ndarray, k: int,
                    exact: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Indices of the first ``k`` of ``argsort(-values, kind="stable")``, as a set (int64,
    unordered), where ``values`` lie within ``approx +- radius`` and ``exact(idx)`` returns
    the exact values at indices ``idx`` (called once, on the undecided ones only)."""
    surely_in, undecided = split_by_bounds(approx, radius, k)
    idx = np.flatnonzero(undecided)
    need = k - int(np.count_nonzero(surely_in))
    if not 0 <= need <= idx.size:  # impossible with sound bounds
        raise RuntimeError(f"confidence bounds are inconsistent ({need} to choose from {idx.size})")
    best = idx[np.argsort(-exact(idx), kind="stable")[:need]] if need > 0 else idx[:0]
    return np.concatenate((np.flatnonzero(surely_in), best))


def without_replacement(conf: np.ndarray, alg_temp: float, k: int,
                        rng: MT19937Stream) -> np.ndarray:
    """Dream: ``multinomial(softmax(conf / alg_temp), k)`` without replacement, float64.

    Each draw takes one uniform double from the alg_temp stream and picks the first
    remaining index whose running probability mass reaches it.
    """
    z = conf.astype(np.float64) / float(alg_temp)
    w = np.exp(z - z.max())
    taken = np.zeros(conf.size, dtype=bool)
    out = np.empty(k, dtype=np.int64)
    for j, u in enumerate(rng.uniform_double(k)):
        cs = np.cumsum(np.where(taken, 0.0, w))
        i = int(np.searchsorted(cs, cs[-1] * u, side="right"))
        i = min(i, conf.size - 1)
        while taken[i]:  # only reachable through rounding at a zero-weight boundary
            i = (i + 1) % conf.size
        taken[i] = True
        out[j] = i
    return out
