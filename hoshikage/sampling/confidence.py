"""Per-position confidence (``calculate_confidence`` in examples/diffusion/diffusion.cpp).

Reference mode reproduces llama.cpp, defects included:

* ENTROPY_BASED returns ``-sum p log p`` (= +H), and the loop unmasks the *largest*
  confidences first, i.e. the most uncertain positions (defect b).
* MARGIN_BASED reads ``data[0].p - data[1].p``: without a sorting stage (no top_k / top_p)
  the array is in token-id order, so that is p(token 0) - p(token 1) (defect c).

Corrected mode uses Dream's definitions: entropy confidence ``sum p log p`` (= -H) and the
margin between the two largest probabilities.
RANDOM draws from the loop's own stream and is handled in :mod:`.diffusion`.
"""
from __future__ import annotations

import numpy as np

from ._libm import LogfRows
from ._seq import seq_sum
from .filters import Candidates, DistResult, SortedRows, _row_top
from .params import Algorithm

__all__ = ["confidence", "entropy_bounds", "top2_margin"]

_EPS = np.float32(1e-10)


def _probs_row(c: Candidates, d: DistResult, i: int, q: np.ndarray, p: np.ndarray, x: np.ndarray) -> None:
    """Row ``i``'s ``cur_p->data[j].p`` into ``p`` (float32 [m], as the reference rounds it; 0 on
    padding) and ``x = p + 1e-10f`` (float32 [m]); ``q`` is float64 scratch [m]."""
    np.divide(d.e[i], d.total[i], out=q)
    p[...] = q
    if isinstance(c, SortedRows):
        p[c.size[i]:] = 0.0  # padding: exact zero terms
    np.add(p, _EPS, out=x)


def _entropy_sum(c: Candidates, d: DistResult) -> np.ndarray:
    """``sum_i p_i * logf(p_i + 1e-10f)`` in float32, left to right over each array."""
    d.make_exact()
    r, m = d.e.shape
    terms = np.empty((r, m), dtype=np.float32)
    q = np.empty(m, dtype=np.float64)
    p = np.empty(m, dtype=np.float32)
    x = np.empty(m, dtype=np.float32)
    lg = LogfRows(m)
    for i in range(r):  # row by row: the float64 temporaries stay in cache
        _probs_row(c, d, i, q, p, x)
        lg.row(x, terms[i])
        terms[i] *= p
    return seq_sum(terms, np.float32)


# Error terms of entropy_bounds (relative to |p ln x| unless said otherwise):
_LOG_F32 = 2.0**-14  # numpy's float32 log, assumed within 2**-14 relative (it is within a few ulp)
_LOG_F32_ABS = 2.0**-20  # ... plus this absolute error, for x near 1 where ln x is tiny
_GLIBC_TERM = 2.0**-22  # glibc logf (0.82 ulp) and the float32 product: 1.32 * 2**-23
_U32, _U64 = 2.0**-24, 2.0**-53
_TINY = 2.0**-140  # subnormal products and sums, per term
_P_ULP = 2.0**-21  # p one float32 ulp off the reference's (approximate total): relative to
# |p ln x| through p, absolute (times p) through ln(p + eps), which moves by <= 2**-22 relative


def entropy_bounds(c: Candidates, d: DistResult, corrected: bool) -> tuple[np.ndarray, np.ndarray]:
    """ENTROPY confidences to within a proven radius, much cheaper than the exact ones.

    Returns (approx, radius), float64 [r], with ``|confidence(ENTROPY) - approx| <= radius``.
    The reference sums ``t_j = p_j * logf(x_j)`` (x_j = p_j + 1e-10f) in float32, left to
    right; every term has the same sign, so the summation error is at most
    ``2**-24 * sum_k |S_k| <= 2**-24 (1 + g) sum_j |t_j| (m - j)`` (S_k partial sums, m
    terms, g = m 2**-24 / (1 - m 2**-24)). Here the terms come from numpy's float32 log
    (see _LOG_F32) and are summed in float64; their gap to the reference's terms is added.
    """
    # d.total may be dist's fast pairwise total (within 2**d.err_log2 << 2**-24 relative): a p
    # then rounds at most one float32 ulp away from the reference's, covered by _P_ULP below.
    r, m = d.e.shape
    approx, radius = np.empty(r), np.empty(r)
    weights = np.arange(m, 0, -1, dtype=np.float64)  # how many partial sums each term enters
    t = np.empty(m, dtype=np.float64)
    q = np.empty(m, dtype=np.float64)
    p = np.empty(m, dtype=np.float32)
    x = np.empty(m, dtype=np.float32)
    g = m * _U32 / (1 - m * _U32)
    with np.errstate(all="ignore"):
        for i in range(r):
            _probs_row(c, d, i, q, p, x)
            np.log(x, out=x)
            x *= p  # the terms, <= 0
            t[...] = x
            s = float(t.sum())
            a = -s  # sum of |terms|
            t *= weights  # (not np.dot: BLAS threads would spin against the sampler's)
            w = -float(t.sum())  # sum_j |term_j| (m - j) = sum of |partial sums|
            # |our terms - the exact p ln x| <= e_ours; |reference terms - p ln x| <= _GLIBC_TERM.
            e_ours = 1.001 * ((_LOG_F32 + _U32 + _P_ULP) * a + (_LOG_F32_ABS + _P_ULP) * (1 + m * _U32)) + m * _TINY
            rad = (_U32 * (1 + g) * (1 + _GLIBC_TERM) * (w + m * e_ours)  # the reference's summation
                   + _GLIBC_TERM * (a + e_ours) + e_ours  # the terms
                   + 2 * m * _U64 * a + m * _TINY)  # our float64 sums
            ok = np.isfinite(s) and np.isfinite(w)
            approx[i] = (s if corrected else -s) if ok else np.nan
            radius[i] = 1.01 * rad if ok else np.inf
    return approx, radius


def _margin_reference(c: Candidates, d: DistResult) -> np.ndarray:
    r = len(c.size)
    p0 = d.p_at(np.zeros(r, dtype=np.int64))
    if d.e.shape[1] < 2:
        return p0
    p1 = d.p_at(np.ones(r, dtype=np.int64))
    return np.where(c.size > 1, p0 - p1, p0).astype(np.float32)


def top2_margin(c: Candidates, d: DistResult) -> np.ndarray:
    """p(most likely token) - p(second most likely), float32 [r] (Dream's margin)."""
    if isinstance(c, SortedRows):  # data[0], data[1] are already the two most likely
        return _margin_reference(c, d)
    r = len(c.rows)
    if len(c.rows[0]) < 2:
        return d.p_at(np.zeros(r, dtype=np.int64))
    # The two largest logits have the two largest probabilities (temp keeps the order).
    top2 = np.array([_row_top(row, 2)[0] for row in c.rows])
    return (d.p_at(top2[:, 0]) - d.p_at(top2[:, 1])).astype(np.float32)


def confidence(algorithm: Algorithm, c: Candidates, d: DistResult, corrected: bool) -> np.ndarray:
    """Confidence of each row's sampled token: float32 [r]. Larger is unmasked first.

    Not for RANDOM (drawn by the loop) or ORIGIN (which uses no confidence).
    """
    if algorithm == Algorithm.CONFIDENCE_BASED:
        return d.p_at(d.selected)
    if algorithm == Algorithm.ENTROPY_BASED:
        s = _entropy_sum(c, d)
        return s if corrected else -s
    if algorithm == Algorithm.MARGIN_BASED:
        return top2_margin(c, d) if corrected else _margin_reference(c, d)
    raise ValueError(f"algorithm {algorithm!r} has no computed confidence")
