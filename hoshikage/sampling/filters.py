"""llama.cpp's sampler chain -- top_k -> top_p -> temp -> dist -- over a batch of rows.

Each function mirrors one stage of ``src/llama-sampler.cpp`` as ``diffusion_generate``
builds the chain (top_k if > 0, top_p(min_keep=1) if < 1, temp if > 0, then dist), with
float32 where the C uses float and float64 where it uses double, and the same summation
order. A batch of ``r`` candidate arrays (one per masked position) is a :data:`Candidates`:
:class:`FreshRows` before any sorting stage, :class:`SortedRows` after one.

Orders among equal logits come from llama.cpp's unstable sorts. Every value computed
depends only on the sorted logit values, so numpy sorts them; the one thing a tie can
change, the sampled id, is settled afterwards by :func:`fix_tied_tokens`, which replays the
C++ sorts element by element (:mod:`._stl`) when the sampled logit is shared. Rows with
NaN or huge logits, which llama.cpp's bucket sort misorders, are replayed upfront.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from . import _stl
from ._dist import DistResult, dist_full, dist_sorted, sorted_expf
from ._libm import ExpfRows
from ._seq import seq_sum

__all__ = ["Candidates", "FreshRows", "SortedRows", "DistResult", "full_candidates", "top_k", "top_p", "temperature",
           "dist", "apply_chain", "fix_tied_tokens"]

_TOP_P_FIRST = 256  # llama_sampler_top_p_apply's first partial sort size
_TOP_P_SMALL = 1024  # at or below this size top_p sorts the whole array in place
_BUCKET_SAFE = np.float32(3.0e8)  # below this, 6.4f*x + 64 cannot overflow an int


@dataclass
class FreshRows:
    """``r`` unsorted llama_token_data arrays: the full rows themselves, never written.

    ``rows`` holds r float32 [n_vocab] arrays (views into the caller's logits are fine); a
    temp stage is kept as a pending divisor ``temp``.
    """

    size: np.ndarray  # int64 [r], cur_p->size (n_vocab in every row)
    rows: Sequence[np.ndarray]
    temp: np.float32 | None = None


@dataclass
class SortedRows:
    """``r`` sorted llama_token_data arrays, as owned padded matrices.

    ``logits`` float32 [r, m] (-inf past ``size``) and ``ids`` int32 [r, m] (-1 where not
    worked out, see fix_tied_tokens). To work ids out later they keep the logits before any
    temp (``raw``, float32 [r, m]), the fresh rows they came from (``source``) and per row
    the C++ sort that made the order, (npartial, entries kept) (``replay``).
    """

    size: np.ndarray  # int64 [r], cur_p->size
    logits: np.ndarray
    ids: np.ndarray
    raw: np.ndarray
    source: Sequence[np.ndarray]
    replay: list
    distinct: np.ndarray | None = None  # bool [r]: kept logits known to be unique in the row


Candidates = Union[FreshRows, SortedRows]


def full_candidates(rows: Sequence[np.ndarray]) -> Candidates:
    """Fresh arrays as the loop fills them: every id, in id order, unsorted."""
    n = len(rows[0]) if len(rows) else 0
    return FreshRows(np.full(len(rows), n, dtype=np.int64), rows)


def _sorted(vals: list, ids: list, rows: Sequence[np.ndarray], size: np.ndarray,
            replay: list) -> SortedRows:
    """Pack per-row sorted values (and ids, or None where unknown) into padded arrays."""
    width = max(int(size.max()), 1)
    logits = np.full((len(vals), width), -np.inf, dtype=np.float32)
    out_ids = np.full((len(vals), width), -1, dtype=np.int32)
    for i, (v, o) in enumerate(zip(vals, ids)):
        logits[i, :len(v)] = v
        if o is not None:
            out_ids[i, :len(o)] = o
    return SortedRows(size.astype(np.int64), logits, out_ids, logits.copy(), rows, replay)


def _truncated(c: SortedRows, size: np.ndarray) -> SortedRows:
    """``cur_p->size = size`` on a sorted batch; the dropped tail becomes -inf padding."""
    logits = c.logits.copy()
    logits[np.arange(logits.shape[1]) >= size[:, None]] = -np.inf
    return SortedRows(size.astype(np.int64), logits, c.ids, c.raw, c.source, c.replay, c.distinct)


_GROUPS = 64  # group g holds positions g, g + stride, g + 2*stride, ... (stride = n // 64)


def _row_top(row: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest logits of ``row``, descending: (int64 positions, float32 values).

    Split the row into interleaved groups of 64 (a reduction numpy vectorises well); the
    m-th largest group maximum is a threshold that at least m logits reach, and all such
    logits sit in the (about m) groups whose maximum reaches it, so only those are looked
    at (llama.cpp partial-sorts the whole array instead). Equal values come out in an
    arbitrary order: callers check for ties.
    """
    n = len(row)
    if m >= n:
        idx = np.arange(n)
    elif n < 16 * _GROUPS or m * _GROUPS * 4 > n:
        idx = np.argpartition(row, n - m)[n - m:]
    else:
        stride = n // _GROUPS
        gmax = row[:stride * _GROUPS].reshape(_GROUPS, stride).max(axis=0)
        tail = np.arange(stride * _GROUPS, n)  # the few leftovers are always looked at
        thr = np.partition(gmax, stride - m)[stride - m]
        groups = np.flatnonzero(gmax >= thr)
        pos = (groups[None, :] + (np.arange(_GROUPS) * stride)[:, None]).reshape(-1)
        pos = np.concatenate((pos, tail))
        vals = row[pos]
        keep = vals >= thr
        cand = pos[keep]
        if cand.size < m:  # NaN or -inf threshold: do it the plain way
            idx = np.argpartition(row, n - m)[n - m:]
        else:
            idx = cand[np.argpartition(vals[keep], cand.size - m)[cand.size - m:]]
    vals = row[idx]
    order = np.argsort(-vals)  # any order among equal values: see fix_tied_tokens
    return idx[order], vals[order]


def _order_unsure(vals: np.ndarray, bucketed: bool) -> bool:
    """Descending ``vals`` with NaN, or with values llama.cpp's bucket sort misplaces (+inf,
    > 3e8): its "sorted" order is then not the descending one, so replay it upfront."""
    if np.isnan(vals).any():
        return True
    return bucketed and len(vals) > 0 and not abs(float(vals[0])) < float(_BUCKET_SAFE)


def top_k(c: Candidates, k: int) -> Candidates:
    """``llama_sampler_top_k_impl``: keep the ``k`` largest logits, sorted descending.

    Equal logits are left in numpy's order; only the sampled token's id can depend on
    it, and :func:`fix_tied_tokens` repairs that after dist.
    """
    if k <= 0:
        return c
    if isinstance(c, SortedRows):
        return _truncated(c, np.minimum(c.size, k))
    n = int(c.size[0])
    k = min(k, n)
    vals, ids, distinct = [], [], []
    for row in c.rows:
        idx, v = _row_top(row, min(k + 1, n))  # one extra: is the cut-off value shared?
        if _order_unsure(v, k > 128):
            idx = _stl.partial_sort_inplace_order(row, k)
            v = row[idx]
            distinct.append(False)
        else:
            distinct.append(not (v[1:] == v[:-1]).any())
        vals.append(v[:k])
        ids.append(idx[:k])
    out = _sorted(vals, ids, c.rows, np.full(len(ids), k), [(k, k)] * len(ids))
    out.distinct = np.array(distinct)
    return out


def fix_tied_tokens(c: Candidates, d: DistResult) -> None:
    """Work out the sampled token id of each sorted row.

    Every value the chain computes depends only on the sorted logit values; only the id
    at the sampled index can depend on how llama.cpp's unstable sorts order equal logits.
    A logit no other id shares names its id; tied ones (rare with real logits) replay
    the C++ sort element by element.
    """
    if not isinstance(c, SortedRows):
        return
    for i in range(len(c.size)):
        j = int(d.selected[i])
        if c.distinct is not None and c.distinct[i]:
            continue  # ids are known and no other id shares the value
        hits = np.flatnonzero(c.source[i] == c.raw[i, j])
        if hits.size == 1:
            c.ids[i, j] = d.token[i] = hits[0]
        else:
            npartial, need = c.replay[i]
            exact = _stl.partial_sort_inplace_order(c.source[i], npartial, need)
            c.ids[i, :need] = exact
            d.token[i] = exact[j]


def top_p(c: Candidates, p: float) -> Candidates:
    """``llama_sampler_top_p_apply`` with ``min_keep = 1``: the shortest prefix, in logit
    order, whose float32 running sum of probabilities reaches ``p``."""
    p32 = np.float32(p)
    if p32 >= np.float32(1.0):
        return c
    if isinstance(c, SortedRows):
        # llama_sampler_softmax_impl(cur_p, false): max is data[0], float running sum.
        L = c.logits
        e = sorted_expf(L, c.size)  # padding: exact zeros in the sums
        cs = np.cumsum(e / seq_sum(e, np.float32)[:, None], axis=1, dtype=np.float32)
        hit = (cs >= p32) & (np.arange(L.shape[1]) < c.size[:, None])
        return _truncated(c, np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, c.size))
    return _top_p_rows(c, p32)


def _top_p_rows(c: FreshRows, p32: np.float32) -> SortedRows:
    """top_p on fresh rows. The C sorts the top 256 (everything at <= 1024 entries) and
    scans; if the running sum falls short it sorts the whole array and goes on. The scan
    only sees values, so values are all that is sorted here (ids: fix_tied_tokens)."""
    n = int(c.size[0])
    ex = ExpfRows(n)
    e = np.empty(n, dtype=np.float32)
    vals, ids, last, replay = [], [], np.empty(len(c.rows), dtype=np.int64), []
    first = _TOP_P_FIRST if n > _TOP_P_SMALL else n
    for i, row in enumerate(c.rows):
        mx = row.max()
        with np.errstate(invalid="ignore"):
            ex.row(row - mx, e, 0, bool(row.min() - mx >= np.float32(-87.0)))
        ex.finish(e)
        cum = np.cumsum(e, dtype=np.float32)[-1]  # softmax_impl's float sum, id order
        if _order_unsure(np.array([mx]), n > 128):
            idx, last[i], npartial = _top_p_replayed(row, e, cum, p32, first)
            vals.append(row[idx[:last[i]]])
            ids.append(idx[:last[i]])
            replay.append((npartial, int(last[i])))
            continue
        # the expf of a logit depends on its value only, so recomputing it on sorted
        # values gives the C's probabilities in the C's order
        k = min(first + 1, n)
        v = -np.sort(-np.partition(row, n - k)[n - k:])
        cs = np.cumsum(_expf_sorted(v[:first], mx) / cum, dtype=np.float32)
        hit = np.flatnonzero(cs >= p32)
        npartial = first
        if not hit.size and n > first:
            npartial = n
            v = -np.sort(-row)
            cs = np.cumsum(_expf_sorted(v, mx) / cum, dtype=np.float32)
            hit = np.flatnonzero(cs >= p32)
        last[i] = hit[0] + 1 if hit.size else n
        vals.append(v[:last[i]])
        ids.append(None)
        replay.append((npartial if n > _TOP_P_SMALL else n, int(last[i])))
    return _sorted(vals, ids, c.rows, last, replay)


def _expf_sorted(v: np.ndarray, mx: np.float32) -> np.ndarray:
    out = np.empty(len(v), dtype=np.float32)
    ex = ExpfRows(len(v))
    with np.errstate(invalid="ignore"):
        x = v - mx
        ex.row(x, out, 0, bool(len(x) == 0 or x.min() >= np.float32(-87.0)))
    ex.finish(out)
    return out


def _top_p_replayed(row, e, cum, p32, first):
    """top_p's scan over the order llama.cpp's sorts really produce (rows with NaN or
    huge logits, which its bucket sort puts out of order). Returns (ids, last, npartial)."""
    n = len(row)
    order = _stl.partial_sort_inplace_order(row, first)
    hit = np.flatnonzero(np.cumsum(e[order] / cum, dtype=np.float32) >= p32)
    npartial = first if n > _TOP_P_SMALL else n
    if not hit.size and n > first:
        npartial = n
        order = _stl.partial_sort_inplace_order(row, n)
        hit = np.flatnonzero(np.cumsum(e[order] / cum, dtype=np.float32) >= p32)
    return order, (hit[0] + 1 if hit.size else n), npartial


def temperature(c: Candidates, t: float) -> Candidates:
    """``llama_sampler_temp_impl`` for t > 0 (``init_temp(1.0)`` is a no-op sampler)."""
    t32 = np.float32(t)
    if t32 == np.float32(1.0):
        return c
    if isinstance(c, SortedRows):
        np.divide(c.logits, t32, out=c.logits)
        return c
    return FreshRows(c.size, c.rows, t32)


def dist(c: Candidates, rnd: np.ndarray) -> DistResult:
    """``llama_sampler_dist_apply`` with one pre-drawn uniform double per row ``rnd``."""
    if isinstance(c, SortedRows):
        return dist_sorted(c.logits, c.size, c.ids, rnd)
    return dist_full(c.rows, c.temp, rnd)


def apply_chain(rows: Sequence[np.ndarray], *, top_k_: int, top_p_: float, temp: float,
                rnd: np.ndarray) -> tuple[Candidates, DistResult]:
    """The whole chain on ``rows`` (r float32 [n_vocab] arrays, not modified) with the
    chain's dist draws ``rnd`` [r]; stages are added exactly when diffusion_generate adds
    them."""
    c = full_candidates(rows)
    if top_k_ > 0:
        c = top_k(c, top_k_)
    if np.float32(top_p_) < np.float32(1.0):
        c = top_p(c, top_p_)
    if np.float32(temp) > np.float32(0.0):
        c = temperature(c, temp)
    d = dist(c, rnd)
    fix_tied_tokens(c, d)
    return c, d
