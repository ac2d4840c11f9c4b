"""libstdc++'s ``std::sort`` / ``std::partial_sort`` and llama.cpp's bucket sort, step by step.

llama.cpp orders ``llama_token_data`` by ``a.logit > b.logit`` with unstable algorithms, so
among equal logits the order (and, at a cut-off, which ids survive) is whatever those
algorithms leave. The fast numpy paths in :mod:`filters` detect ties and call into this
module, which replays the exact element moves of g++ 12's ``bits/stl_algo.h`` /
``bits/stl_heap.h`` and of llama.cpp's ``llama_token_data_array_partial_sort``. Pure
Python, only used on rows where the tie order matters.

Sequences are lists of ``(logit, id)`` tuples; ``comp(a, b)`` is ``a[0] > b[0]``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["partial_sort", "sort", "bucket_sort_order", "partial_sort_inplace_order"]

_THRESHOLD = 16  # libstdc++ _S_threshold


def _adjust_heap(a: list, hole: int, length: int, value) -> None:
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if a[child][0] > a[child - 1][0]:
            child -= 1
        a[hole] = a[child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[hole] = a[child - 1]
        hole = child - 1
    # __push_heap
    parent = (hole - 1) // 2
    while hole > top and a[parent][0] > value[0]:
        a[hole] = a[parent]
        hole = parent
        parent = (hole - 1) // 2
    a[hole] = value


def _make_heap(a: list, lo: int, hi: int) -> None:
    length = hi - lo
    if length < 2:
        return
    view = a[lo:hi]
    parent = (length - 2) // 2
    while True:
        _adjust_heap(view, parent, length, view[parent])
        if parent == 0:
            break
        parent -= 1
    a[lo:hi] = view


def _heap_select_sort(a: list, lo: int, mid: int, hi: int) -> None:
    """``std::__partial_sort(lo, mid, hi)``: __heap_select then __sort_heap."""
    if lo == mid:
        # Degenerate heap of size 0: __pop_heap still swaps in every larger element.
        for i in range(lo, hi):
            if a[i][0] > a[lo][0]:
                a[lo], a[i] = a[i], a[lo]
        return
    heap = a[lo:mid]
    _make_heap(heap, 0, len(heap))
    m = len(heap)
    rest = a[mid:hi]
    if rest:
        # Only elements with logit > the heap top get in; the top only rises, so a numpy
        # pre-filter against the current top skips the bulk of a long tail.
        keys = np.fromiter((t[0] for t in rest), dtype=np.float64, count=len(rest))
        pos = 0
        chunk = 1024
        while pos < len(rest):
            seg = keys[pos:pos + chunk]
            for j in np.nonzero(seg > heap[0][0])[0]:
                i = pos + int(j)
                if rest[i][0] > heap[0][0]:
                    value = rest[i]
                    rest[i] = heap[0]
                    _adjust_heap(heap, 0, m, value)
            pos += chunk
            chunk = min(chunk * 2, 65536)
    # __sort_heap
    last = m
    while last > 1:
        last -= 1
        value = heap[last]
        heap[last] = heap[0]
        _adjust_heap(heap, 0, last, value)
    a[lo:mid] = heap
    a[mid:hi] = rest


def partial_sort(a: list, middle: int) -> list:
    """``std::partial_sort(a, a + middle, a + len(a), comp)``, in place; returns ``a``."""
    _heap_select_sort(a, 0, middle, len(a))
    return a


def _move_median_to_first(a: list, result: int, x: int, y: int, z: int) -> None:
    if a[x][0] > a[y][0]:
        if a[y][0] > a[z][0]:
            a[result], a[y] = a[y], a[result]
        elif a[x][0] > a[z][0]:
            a[result], a[z] = a[z], a[result]
        else:
            a[result], a[x] = a[x], a[result]
    elif a[x][0] > a[z][0]:
        a[result], a[x] = a[x], a[result]
    elif a[y][0] > a[z][0]:
        a[result], a[z] = a[z], a[result]
    else:
        a[result], a[y] = a[y], a[result]


def _unguarded_partition(a: list, first: int, last: int, pivot: int) -> int:
    pk = a[pivot][0]
    while True:
        while a[first][0] > pk:
            first += 1
        last -= 1
        while pk > a[last][0]:
            last -= 1
        if not first < last:
            return first
        a[first], a[last] = a[last], a[first]
        first += 1


def _introsort_loop(a: list, first: int, last: int, depth: int) -> None:
    while last - first > _THRESHOLD:
        if depth == 0:
            _heap_select_sort(a, first, last, last)
            return
        depth -= 1
        mid = first + (last - first) // 2
        _move_median_to_first(a, first, first + 1, mid, last - 1)
        cut = _unguarded_partition(a, first + 1, last, first)
        _introsort_loop(a, cut, last, depth)
        last = cut


def _unguarded_linear_insert(a: list, last: int) -> None:
    val = a[last]
    nxt = last - 1
    while val[0] > a[nxt][0]:
        a[last] = a[nxt]
        last = nxt
        nxt -= 1
    a[last] = val


def _insertion_sort(a: list, first: int, last: int) -> None:
    if first == last:
        return
    for i in range(first + 1, last):
        if a[i][0] > a[first][0]:
            val = a[i]
            a[first + 1:i + 1] = a[first:i]
            a[first] = val
        else:
            _unguarded_linear_insert(a, i)


def sort(a: list, first: int = 0, last: int | None = None) -> list:
    """``std::sort(a + first, a + last, comp)`` (introsort), in place; returns ``a``."""
    last = len(a) if last is None else last
    n = last - first
    if n > 0:
        _introsort_loop(a, first, last, 2 * (n.bit_length() - 1))
        if n > _THRESHOLD:
            _insertion_sort(a, first, first + _THRESHOLD)
            for i in range(first + _THRESHOLD, last):
                _unguarded_linear_insert(a, i)
        else:
            _insertion_sort(a, first, last)
    return a


_NBUCKETS = 128
_BUCKET_SCALE = np.float32(_NBUCKETS) / (np.float32(10.0) - np.float32(-10.0))
_BUCKET_INTER = -np.float32(-10.0) * _BUCKET_SCALE


def bucket_index(logits: np.ndarray) -> np.ndarray:
    """``int(bucket_scale * val + bucket_inter)`` clamped to [0, 127], as x86-64 computes it.

    The float32 -> int conversion of a NaN or out-of-range value yields INT_MIN
    (cvttss2si), which the clamp turns into bucket 0 -- so +inf lands in the lowest bucket.
    """
    with np.errstate(all="ignore"):
        v = _BUCKET_SCALE * logits.astype(np.float32) + _BUCKET_INTER
        bad = ~(np.abs(v) < np.float32(2.0**31))
        ib = np.where(bad, 0, np.trunc(np.where(bad, 0, v))).astype(np.int64)
    return np.clip(ib, 0, _NBUCKETS - 1)


def _ordered(keys: np.ndarray, pos: np.ndarray, fn) -> np.ndarray:
    """Positions ``pos`` reordered by ``fn`` on their (key, position) records."""
    items = list(zip(keys[pos].tolist(), pos.tolist()))
    return np.fromiter((t[1] for t in fn(items)), dtype=np.int64, count=len(items))


def _distinct(k: np.ndarray) -> bool:
    s = np.sort(k)
    return not (np.isnan(s).any() or (s[1:] == s[:-1]).any())


def bucket_sort_order(keys: np.ndarray, npartial: int, need: int) -> np.ndarray:
    """llama.cpp's ``llama_token_data_array_partial_sort``: positions of its first ``need``
    (<= npartial) results. ``keys`` are the logits in the array's current order.

    Buckets whose logits are all distinct have one possible order, taken from numpy; only
    buckets with ties are replayed through ``std::sort`` / ``std::partial_sort``.
    """
    bidx = bucket_index(keys)
    histo = np.bincount(bidx, minlength=_NBUCKETS)
    nhave, ib = 0, _NBUCKETS - 1
    while ib >= 0:
        nhave += int(histo[ib])
        if nhave >= npartial:
            break
        ib -= 1
    order = np.argsort(bidx[::-1], kind="stable")  # group by bucket, stable scatter ...
    order = (len(keys) - 1 - order)[::-1]  # ... highest bucket first, original order within
    out, done, start = [], 0, 0
    for j in range(_NBUCKETS - 1, max(ib, 0) - 1, -1):
        h = int(histo[j])
        if h == 0:
            continue
        pos = order[start:start + h]
        start += h
        take = h if j > ib else npartial - done
        k = keys[pos]
        if _distinct(k):
            srt = pos[np.argsort(-k, kind="stable")[:take]]
        elif j > ib:
            srt = _ordered(keys, pos, sort)
        else:
            srt = _ordered(keys, pos, lambda it: partial_sort(it, take))[:take]
        out.append(srt)
        done += len(srt)
        if done >= need:
            break
    return np.concatenate(out)[:need]


def partial_sort_inplace_order(keys: np.ndarray, npartial: int, need: int | None = None) -> np.ndarray:
    """``llama_token_data_array_partial_sort_inplace``: positions of its first ``need``
    (default ``npartial``) entries, in order."""
    need = npartial if need is None else need
    if npartial <= 128:
        return _ordered(keys, np.arange(len(keys)), lambda it: partial_sort(it, npartial))[:need]
    return bucket_sort_order(keys, npartial, need)
