"""llama.cpp's sampler chain -- top_k -> top_p -> temp -> dist -- over a batch of rows.

Each function mirrors one stage of ``src/llama-sampler.cpp`` as ``diffusion_generate``
builds the chain (top_k if > 0, top_p(min_keep=1) if < 1, temp if > 0, then dist), with
float32 where the C uses float and float64 where it uses double, and the same summation
order. A batch of ``r`` candidate arrays (one per masked position) is a :class:`Candidates`.

Orders among equal logits come from llama.cpp's unstable sorts. The numpy paths are exact
whenever the logits that matter are distinct; rows with ties there (or huge values) are
redone by :mod:`._stl`, which replays the C++ sorts element by element.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _stl
from ._dist import DistResult, dist
from ._libm import expf

__all__ = ["Candidates", "DistResult", "full_candidates", "top_k", "top_p", "temperature",
           "dist", "apply_chain", "seq_sum_f32"]

_TOP_P_FIRST = 256  # llama_sampler_top_p_apply's first partial sort size
_TOP_P_SMALL = 1024  # at or below this size top_p sorts the whole array in place
_BUCKET_SAFE = np.float32(3.0e8)  # below this, 6.4f*x + 64 cannot overflow an int


@dataclass
class Candidates:
    """``r`` llama_token_data arrays. Stages may modify the arrays in place.

    logits: float32 [r, m]; entries at and beyond ``size[i]`` are padding (-inf).
    ids:    int32 [r, m], or None for full unsorted rows (id == column).
    size:   int64 [r], the live length of each array (``cur_p->size``).
    sorted: ``cur_p->sorted`` (the same for every row of a batch).
    """

    logits: np.ndarray
    ids: np.ndarray | None
    size: np.ndarray
    sorted: bool

    def id_at(self, col: np.ndarray) -> np.ndarray:
        """Token id at array index ``col`` [r] of each row: int32 [r]."""
        if self.ids is None:
            return np.asarray(col).astype(np.int32)
        return self.ids[np.arange(len(col)), col].astype(np.int32)


def _truncated(c: Candidates, size: np.ndarray) -> Candidates:
    """``cur_p->size = size`` on a sorted batch, re-padding the dropped tail with -inf."""
    logits = c.logits.copy()
    logits[np.arange(logits.shape[1]) >= size[:, None]] = -np.inf
    return Candidates(logits, c.ids, size.astype(np.int64), True)


def full_candidates(logits: np.ndarray) -> Candidates:
    """Fresh arrays as the loop fills them: every id, in id order, unsorted."""
    r, n = logits.shape
    return Candidates(logits, None, np.full(r, n, dtype=np.int64), False)


def seq_sum_f32(x: np.ndarray) -> np.ndarray:
    """Left-to-right float32 sum of each row of ``x`` [r, m] -> float32 [r] (no pairwise)."""
    r, m = x.shape
    if m == 0:
        return np.zeros(r, dtype=np.float32)
    if r == 1:  # a 1-D reduction would be pairwise; accumulate is always sequential
        return np.cumsum(x[0], dtype=np.float32)[-1:].copy()
    # Reducing over the outer axis of a C-contiguous [m, r] block adds row after row:
    # sequential per column, vectorised across columns. Chunked to stay in cache.
    acc = np.zeros(r, dtype=np.float32)
    chunk = 8192
    buf = np.empty((chunk + 1, r), dtype=np.float32)
    for j in range(0, m, chunk):
        k = min(chunk, m - j)
        buf[0] = acc
        buf[1:k + 1] = x[:, j:j + k].T
        acc = np.add.reduce(buf[:k + 1], axis=0)
    return acc


def _has_ties(vals: np.ndarray, upto: np.ndarray) -> np.ndarray:
    """Rows of descending ``vals`` [r, m] with equal neighbours (or NaN) within [0, upto]."""
    bad = np.isnan(vals).any(axis=1)
    if vals.shape[1] >= 2:
        eq = vals[:, 1:] == vals[:, :-1]
        eq &= np.arange(1, vals.shape[1]) <= upto[:, None]
        bad |= eq.any(axis=1)
    return bad


def _top_sorted(L: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest logits of each row of ``L`` [r, n], descending: (int64 idx, float32).

    A strided sample's m-th largest value is a threshold that at least m logits of the row
    reach, so only a small candidate set is partitioned (llama.cpp partial-sorts it all).
    """
    r, n = L.shape
    if m >= n:
        part = np.broadcast_to(np.arange(n), (r, n))
    else:
        stride = int(np.sqrt(n / m))
        part = None
        if stride >= 4 and n // stride >= m:
            thr = np.partition(L[:, ::stride], -m, axis=1)[:, -m]
            rows, cols = np.nonzero(L >= thr[:, None])
            counts = np.bincount(rows, minlength=r)
            if counts.min() >= m and counts.max() <= n // 4:
                width = int(counts.max())
                start = np.concatenate(([0], np.cumsum(counts)[:-1]))
                colpad = np.zeros((r, width), dtype=np.int64)
                valpad = np.full((r, width), -np.inf, dtype=np.float32)
                pos = np.arange(len(rows)) - start[rows]
                colpad[rows, pos] = cols
                valpad[rows, pos] = L[rows, cols]
                sub = np.argpartition(valpad, width - m, axis=1)[:, width - m:]
                part = np.take_along_axis(colpad, sub, axis=1)
        if part is None:
            part = np.argpartition(L, n - m, axis=1)[:, n - m:]
    vals = np.take_along_axis(L, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def _exact_order(row: np.ndarray, fn) -> np.ndarray:
    """Ids of one row after the replayed C++ sort ``fn(items) -> items``."""
    items = list(zip(row.tolist(), range(len(row))))
    return np.fromiter((t[1] for t in fn(items)), dtype=np.int64)


def top_k(c: Candidates, k: int) -> Candidates:
    """``llama_sampler_top_k_impl``: keep the ``k`` largest logits, sorted descending."""
    if k <= 0:
        return c
    if c.sorted:
        return _truncated(c, np.minimum(c.size, k))
    L = c.logits
    r, n = L.shape
    k = min(k, n)
    idx, vals = _top_sorted(L, min(k + 1, n))  # one extra: the boundary decides ties
    bad = _has_ties(vals, np.full(r, min(k, n - 1)))
    if k > 128:  # bucket-sort path: huge or +inf logits are bucketed out of order
        bad |= ~(np.abs(vals[:, 0]) < _BUCKET_SAFE)
    idx, vals = idx[:, :k].copy(), vals[:, :k].copy()
    for i in np.nonzero(bad)[0]:
        idx[i] = _exact_order(L[i], lambda it: _stl.partial_sort_inplace_order(it, k))
        vals[i] = L[i, idx[i]]
    return Candidates(vals, idx.astype(np.int32), np.full(r, k, dtype=np.int64), True)


def top_p(c: Candidates, p: float) -> Candidates:
    """``llama_sampler_top_p_apply`` with ``min_keep = 1``: the shortest prefix, in logit
    order, whose float32 running sum of probabilities reaches ``p``."""
    p32 = np.float32(p)
    if p32 >= np.float32(1.0):
        return c
    L = c.logits
    r, m = L.shape
    # llama_sampler_softmax_impl(cur_p, false): float max, expf, float running sum.
    mx = L[:, 0] if c.sorted else L.max(axis=1)
    with np.errstate(invalid="ignore"):
        e = expf(L - mx[:, None])
    cum = seq_sum_f32(e)
    if c.sorted:  # already in order: just scan
        cs = np.cumsum(e / cum[:, None], axis=1, dtype=np.float32)
        hit = (cs >= p32) & (np.arange(m) < c.size[:, None])
        last = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, c.size)
        return _truncated(c, last)

    # Unsorted: the C sorts the top 256 (all, at <= 1024 entries) and scans their
    # probabilities; only if the sum falls short does it sort everything and go on.
    first = _TOP_P_FIRST if m > _TOP_P_SMALL else m
    idx, vals = _top_sorted(L, min(first + 1, m))
    last = np.empty(r, dtype=np.int64)
    kept, phase2 = [], []
    for i in range(r):
        cs = np.cumsum(e[i, idx[i, :first]] / cum[i], dtype=np.float32)
        hit = np.flatnonzero(cs >= p32)
        order, v = idx[i], vals[i]
        if hit.size:
            last[i] = hit[0] + 1
        else:  # not within the first partial sort: the whole array gets sorted
            order = np.argsort(-L[i], kind="stable")
            v = L[i, order]
            hit = np.flatnonzero(np.cumsum(e[i, order] / cum[i], dtype=np.float32) >= p32)
            last[i] = hit[0] + 1 if hit.size else m
            phase2.append(i)
        upto = min(int(last[i]), len(v) - 1)
        tie = bool(np.isnan(v[:upto + 1]).any() or (v[1:upto + 1] == v[:upto]).any())
        tie |= m > 128 and not abs(float(v[0])) < float(_BUCKET_SAFE)
        if tie:
            npartial = m if (i in phase2 or m <= _TOP_P_SMALL) else _TOP_P_FIRST
            sort = (_stl.bucket_partial_sort if m > 128 else _stl.partial_sort_inplace_order)
            order = _exact_order(L[i], lambda it: sort(it, npartial))
        kept.append(order[:last[i]])
    width = int(last.max())
    ids = np.zeros((r, width), dtype=np.int64)
    logits = np.full((r, width), -np.inf, dtype=np.float32)
    for i, o in enumerate(kept):
        ids[i, :len(o)] = o
        logits[i, :len(o)] = L[i, o]
    return Candidates(logits, ids.astype(np.int32), last, True)


def temperature(c: Candidates, t: float) -> Candidates:
    """``llama_sampler_temp_impl`` for t > 0 (``init_temp(1.0)`` is a no-op sampler)."""
    t32 = np.float32(t)
    if t32 != np.float32(1.0):
        np.divide(c.logits, t32, out=c.logits)
    return c


def apply_chain(logits: np.ndarray, *, top_k_: int, top_p_: float, temp: float,
                rnd: np.ndarray) -> tuple[Candidates, DistResult]:
    """The whole chain on rows ``logits`` [r, n_vocab] float32 (modified in place), with
    the chain's dist draws ``rnd`` [r]; stages are added exactly when diffusion_generate
    adds them."""
    c = full_candidates(logits)
    if top_k_ > 0:
        c = top_k(c, top_k_)
    if np.float32(top_p_) < np.float32(1.0):
        c = top_p(c, top_p_)
    if np.float32(temp) > np.float32(0.0):
        c = temperature(c, temp)
    return c, dist(c.logits, c.size, c.sorted, c.ids, rnd)
