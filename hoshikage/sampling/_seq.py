"""Left-to-right sums, as a C ``for`` loop accumulates (numpy's ``sum`` is pairwise)."""
from __future__ import annotations

import numpy as np

__all__ = ["seq_sum"]

_CHUNK = 4096


def seq_sum(x: np.ndarray, dtype) -> np.ndarray:
    """Sequential sum of each row of ``x`` [r, m], accumulated in ``dtype``: [r].

    Reducing over the outer axis of a C-contiguous [k, r] block adds one row of it after
    another -- sequential per column, vectorised across columns -- so ``x`` is fed through
    in transposed chunks, each starting from the previous partial sums.
    """
    r, m = x.shape
    if m == 0:
        return np.zeros(r, dtype=dtype)
    if r == 1:  # a 1-D reduction would be pairwise; accumulate is always sequential
        return np.cumsum(x[0], dtype=dtype)[-1:].copy()
    acc = np.zeros(r, dtype=dtype)
    buf = np.empty((_CHUNK + 1, r), dtype=dtype)
    for j in range(0, m, _CHUNK):
        k = min(_CHUNK, m - j)
        buf[0] = acc
        buf[1:k + 1] = x[:, j:j + k].T
        acc = np.add.reduce(buf[:k + 1], axis=0)
    return acc
