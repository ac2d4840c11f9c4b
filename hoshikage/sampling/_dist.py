"""``llama_sampler_dist_apply`` over a batch of candidate arrays.

The C computes ``e_i = expf(logit_i - max)`` (float), ``sum_cum`` = their double sum
left to right, draws ``rnd``, and selects the first ``i`` whose double running sum reaches
``sum_cum * rnd``; probabilities become ``float(e_i / sum_cum)``.

A sequential double sum over a 100k+ vocabulary is latency-bound, so long rows take a
faster route that is still exact: pairwise block sums give the running sums to within a
proven bound of the sequential ones (``(n + n/B + B) * 2**-53`` relative); when the target
lies farther than that from the chosen boundary, and a normalised probability lies farther
than that from a float32 rounding midpoint, the sequential values would give the same
answer. Otherwise (about one row in a few hundred) the row is summed sequentially.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._libm import ExpfRows, _near_f32_midpoint, expf
from ._seq import seq_sum

__all__ = ["DistResult", "dist_sorted", "dist_full", "dist_repeated"]

_BLOCK = 256
_FAST_MIN = 4096  # shorter rows are summed sequentially right away


def _err_log2(m: int) -> int:
    """log2 of a safe bound on |approximate - sequential| running sums, relative to the sum."""
    bound = (m + m // _BLOCK + _BLOCK + 16) * 2.0**-53
    return math.ceil(math.log2(bound)) + 2


@dataclass
class DistResult:
    """What the dist stage leaves behind, for ``r`` rows of ``m`` candidates.

    selected: int64 [r], ``cur_p->selected``; token: int32 [r], its id.
    e:        float32 [r, m], ``expf(logit - max)`` (0 on padding).
    total:    float64 [r], ``sum_cum``; exact where ``exact`` [r] is True, otherwise within
              ``2**err_log2`` relative (made exact on demand).
    """

    selected: np.ndarray
    token: np.ndarray
    e: np.ndarray
    total: np.ndarray
    exact: np.ndarray
    err_log2: int

    def make_exact(self, rows=None) -> None:
        """Replace approximate totals by the sequential double sums."""
        rows = np.flatnonzero(~self.exact) if rows is None else np.asarray(rows)
        if rows.size:
            self.total[rows] = seq_sum(self.e[rows], np.float64)
            self.exact[rows] = True

    def p_at(self, col: np.ndarray) -> np.ndarray:
        """Normalised ``cur_p->data[col[i]].p`` of each row: float32 [r]."""
        ar = np.arange(len(col))
        e = self.e[ar, col].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = e / self.total
        unsure = ~self.exact & _near_f32_midpoint(q, self.err_log2 + 2)
        if unsure.any():
            rows = np.nonzero(unsure)[0]
            self.make_exact(rows)
            with np.errstate(invalid="ignore", divide="ignore"):
                q[rows] = e[rows] / self.total[rows]
        return q.astype(np.float32)

    def p_all(self) -> np.ndarray:
        """All normalised probabilities, float32 [r, m], in array order."""
        self.make_exact()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.divide(self.e, self.total[:, None]).astype(np.float32)


def _select_exact(e64: np.ndarray, rnd: float, size: int) -> tuple[int, float]:
    cs = np.cumsum(e64)
    total = float(cs[-1])
    tgt = total * rnd
    j = int(np.searchsorted(cs, tgt, side="left"))
    if j >= size or math.isnan(tgt):
        j = size - 1  # the C's "not found" fallback (NaN logits only)
    return j, total


def sorted_expf(logits: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``expf(l - data[0].logit)`` over sorted arrays [r, m], exact zeros past ``size``."""
    r, m = logits.shape
    valid = np.arange(m) < size[:, None]
    with np.errstate(invalid="ignore"):
        x = np.where(valid, logits - logits[:, :1], np.float32(0.0))
    if m <= _FAST_MIN:  # small arrays: the whole batch at once
        e = expf(x)
    else:
        e = np.empty((r, m), dtype=np.float32)
        ex = ExpfRows(m)
        for i in range(r):
            ex.row(x[i], e[i], i * m, bool(x[i].min() >= np.float32(-87.0)))
        ex.finish(e.reshape(-1))
    e[~valid] = 0.0
    return e


def dist_sorted(logits: np.ndarray, size: np.ndarray, ids: np.ndarray,
                rnd: np.ndarray) -> DistResult:
    """Dist on sorted arrays ``logits`` [r, m] float32 (-inf padding past ``size``): the max
    is ``data[0]``. Size-1 arrays get p = 1 (the C returns early, after drawing)."""
    r, m = logits.shape
    e = sorted_expf(logits, size)
    one = size == 1
    e[one] = 0.0
    e[one, 0] = 1.0
    cs = np.cumsum(e, axis=1, dtype=np.float64)  # accumulate: left to right per row
    total = cs[:, -1].copy()
    tgt = total * rnd
    # first index whose running sum reaches the target (running sums never decrease)
    sel = np.count_nonzero(cs < tgt[:, None], axis=1)
    bad = (sel >= size) | np.isnan(tgt)
    sel[bad] = size[bad] - 1  # the C's "not found" fallback (NaN logits only)
    token = ids[np.arange(r), sel].astype(np.int32)
    return DistResult(sel, token, e, total, np.ones(r, dtype=bool), _err_log2(m))


def dist_full(rows, temp: np.float32 | None, rnd: np.ndarray) -> DistResult:
    """Dist on fresh full rows (each float32 [n], not modified), after an optional
    temperature ``temp`` (``logit / temp`` in float32, applied on the fly)."""
    r = len(rows)
    m = len(rows[0])
    e = np.empty((r, m), dtype=np.float32)
    x = np.empty(m, dtype=np.float32)
    # Row by row (a row stays in cache, buffers are reused); the few values that need
    # glibc's exact algorithm are gathered and done in one go.
    ex = ExpfRows(m)
    with np.errstate(invalid="ignore"):
        for i, row in enumerate(rows):
            if temp is not None:
                np.divide(row, temp, out=x)
                np.subtract(x, np.float32(row.max()) / temp, out=x)  # t > 0 keeps the max
            else:
                np.subtract(row, row.max(), out=x)
            ex.row(x, e[i], i * m, bool(x.min() >= np.float32(-87.0)))
    ex.finish(e.reshape(-1))
    total = np.empty(r, dtype=np.float64)
    sel = np.empty(r, dtype=np.int64)
    exact = np.ones(r, dtype=bool)
    err_log2 = _err_log2(m)
    for i in range(r):
        j = -1
        if m >= _FAST_MIN:
            j, tot = _select_fast(e[i], float(rnd[i]), err_log2)
        if 0 <= j < m:
            exact[i] = False
        else:
            j, tot = _select_exact(e[i].astype(np.float64), float(rnd[i]), m)
        sel[i], total[i] = j, tot
    return DistResult(sel, sel.astype(np.int32), e, total, exact, err_log2)


def _select_fast(e: np.ndarray, rnd: float, err_log2: int) -> tuple[int, float]:
    """Selection from pairwise block sums of ``e`` (float32 [m]); (-1, nan) when too close
    to call."""
    m = len(e)
    nfull = m // _BLOCK
    blocks = np.add.reduce(e[:nfull * _BLOCK].reshape(nfull, _BLOCK), axis=1, dtype=np.float64)
    if m > nfull * _BLOCK:
        blocks = np.append(blocks, np.add.reduce(e[nfull * _BLOCK:], dtype=np.float64))
    prefix = np.cumsum(blocks)
    tot = float(prefix[-1])
    tgt = tot * rnd
    if not math.isfinite(tgt) or tot <= 0.0:
        return -1, math.nan
    b = int(np.searchsorted(prefix, tgt, side="left"))
    if b >= len(blocks):
        return -1, math.nan
    base = float(prefix[b - 1]) if b else 0.0
    run = base + np.cumsum(e[b * _BLOCK:(b + 1) * _BLOCK], dtype=np.float64)
    j = int(np.searchsorted(run, tgt, side="left"))
    if j >= len(run):
        return -1, math.nan
    delta = tot * 2.0**err_log2
    below = float(run[j - 1]) if j else base
    first = b == 0 and j == 0  # nothing before it: the C compares against exactly 0
    if run[j] - tgt > delta and (first or tgt - below > delta):
        return b * _BLOCK + j, tot
    return -1, math.nan


def dist_repeated(logits: np.ndarray, rnd: np.ndarray) -> np.ndarray:
    """Dist applied ``len(rnd)`` times to one unchanged unsorted array ``logits`` [m].

    The alg_temp path of diffusion_generate: the C zeroes the chosen entry's ``p`` between
    draws, but dist recomputes ``p`` from the logits, so every draw sees the same
    distribution (indices may repeat; defect d). Returns int64 [len(rnd)].
    """
    m = len(logits)
    if m == 1:
        return np.zeros(len(rnd), dtype=np.int64)
    with np.errstate(invalid="ignore"):
        e = expf(logits - logits.max())
    cs = np.cumsum(e.astype(np.float64))
    tgt = cs[-1] * np.asarray(rnd, dtype=np.float64)
    sel = np.searchsorted(cs, tgt, side="left").astype(np.int64)
    sel[(sel >= m) | np.isnan(tgt)] = m - 1
    return sel
