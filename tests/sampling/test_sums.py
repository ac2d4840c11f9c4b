"""Left-to-right sums and the fast dist selection against plain loops."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hoshikage.sampling._dist import _err_log2, _select_exact, _select_fast
from hoshikage.sampling._seq import seq_sum


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 33])
def test_seq_sum_is_left_to_right(rows):
    rng = np.random.default_rng(rows)
    x = (rng.random((rows, 9000)) ** 8).astype(np.float32)
    for dtype in (np.float32, np.float64):
        got = seq_sum(x, dtype)
        for i in range(rows):
            acc = dtype(0)
            for v in x[i].tolist():
                acc = dtype(acc + dtype(v))
            assert got[i] == acc


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), spread=st.sampled_from([1.0, 5.0, 30.0]),
       n=st.sampled_from([4096, 5000, 70001]))
def test_fast_selection_equals_sequential(seed, spread, n):
    rng = np.random.default_rng(seed)
    e = np.exp(-rng.random(n) * spread).astype(np.float32)
    e[rng.integers(0, n)] = 1.0
    for rnd in [0.0, 1e-12, *rng.random(20).tolist(), 1 - 2**-53]:
        j, tot = _select_fast(e, rnd, _err_log2(n))
        ref_j, ref_tot = _select_exact(e.astype(np.float64), rnd, n)
        if j >= 0:  # otherwise the caller falls back to the sequential path
            assert j == ref_j
            assert abs(tot - ref_tot) <= ref_tot * 2.0**_err_log2(n)
