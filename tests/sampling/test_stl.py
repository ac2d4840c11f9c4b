"""libstdc++ sort / partial_sort replayed element by element (tie order included)."""
from __future__ import annotations

import numpy as np
import pytest

from hoshikage.sampling import _stl


def _keys(rng, n, distinct):
    keys = rng.integers(0, distinct, n).astype(np.float32) * np.float32(0.5)
    keys[rng.random(n) < 0.05] = -np.inf
    return keys


@pytest.mark.parametrize("case", range(40))
def test_sort_and_partial_sort_match_gxx(stl_ref, case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 40)) if case % 2 else int(rng.integers(40, 3000))
    keys = _keys(rng, n, int(rng.integers(1, 12)) if case % 3 else 10**6)
    items = [(float(k), i) for i, k in enumerate(keys)]
    assert [t[1] for t in _stl.sort(list(items))] == stl_ref(keys, -1).tolist()
    middle = int(rng.integers(0, n + 1))
    got = [t[1] for t in _stl.partial_sort(list(items), middle)]
    assert got == stl_ref(keys, middle).tolist()


def test_bucket_index_edges():
    v = np.array([-np.inf, -1e30, -10, -9.99, 0, 9.99, 10, 1e9, np.inf, np.nan], np.float32)
    b = _stl.bucket_index(v)
    assert b.tolist()[:7] == [0, 0, 0, 0, 64, 127, 127]
    # huge, +inf and NaN overflow the float -> int conversion: INT_MIN, clamped to 0
    assert b.tolist()[7:] == [0, 0, 0]
