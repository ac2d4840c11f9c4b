"""Choosing the top k by bounds: the same set as the exact stable sort, and ENTROPY bounds
that hold the exact confidence (and are narrow enough to decide most positions)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hoshikage.sampling.confidence import confidence, entropy_bounds
from hoshikage.sampling.filters import apply_chain
from hoshikage.sampling.params import Algorithm
from hoshikage.sampling.ranking import split_by_bounds, top_k_by_bounds


def _exact_top(values: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-values, kind="stable")[:k].tolist())


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 2**32 - 1), levels=st.integers(1, 6),
       width=st.sampled_from([0.0, 0.01, 0.3, 2.0]))
def test_same_set_as_the_stable_sort(n, seed, levels, width):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, levels, n).astype(np.float32)  # few levels: many exact ties
    radius = rng.random(n) * width
    approx = values + (rng.random(n) * 2 - 1) * radius  # the truth lies inside every interval
    if n > 3:
        approx[rng.integers(0, n)] = np.nan  # an unknown value is always undecided
    k = int(rng.integers(1, n))
    asked = []

    def exact(idx):
        asked.append(idx)
        return values[idx]

    chosen = top_k_by_bounds(approx, radius, k, exact)
    assert len(chosen) == k and set(chosen.tolist()) == _exact_top(values, k)
    assert len(asked) <= 1  # once, on the undecided positions, and only if some are still needed


def test_separated_values_need_no_exact_value():
    approx = np.array([5.0, 1.0, 4.0, 0.0, 3.0])
    surely_in, undecided = split_by_bounds(approx, np.full(5, 0.1), 2)
    assert surely_in.tolist() == [True, False, True, False, False] and not undecided.any()
    chosen = top_k_by_bounds(approx, np.full(5, 0.1), 2, lambda idx: pytest.fail("asked"))
    assert sorted(chosen.tolist()) == [0, 2]


def _rows(kind: str, n: int, r: int, rng) -> list[np.ndarray]:
    if kind == "flat":
        x = rng.normal(0, 0.05, (r, n))
    elif kind == "peaked":
        x = rng.normal(0, 3, (r, n))
        x[np.arange(r), rng.integers(0, n, r)] += 25
    elif kind == "one-hot":
        x = np.full((r, n), -200.0)  # exp underflows to exact zeros: p is 1 and 0
        x[:, 0] = 0
    else:  # "mixed": a different temperature per row
        x = rng.normal(0, 1, (r, n)) * rng.uniform(0.1, 8, (r, 1))
    return list(x.astype(np.float32))


@pytest.mark.parametrize("kind", ["flat", "peaked", "one-hot", "mixed"])
@pytest.mark.parametrize("n", [300, 5000, 49152])
@pytest.mark.parametrize("chain", [dict(top_k_=0, top_p_=1.0, temp=0.0), dict(top_k_=40, top_p_=1.0, temp=0.8),
                                   dict(top_k_=0, top_p_=0.9, temp=0.7)])
@pytest.mark.parametrize("corrected", [False, True])
def test_entropy_bounds_hold_the_exact_confidence(kind, n, chain, corrected):
    rng = np.random.default_rng(n + len(kind))
    rows = _rows(kind, n, 12, rng)
    rnd = rng.random(len(rows))
    c, d = apply_chain(rows, rnd=rnd, **chain)
    exact = confidence(Algorithm.ENTROPY_BASED, c, d, corrected).astype(np.float64)
    c, d = apply_chain(rows, rnd=rnd, **chain)
    approx, radius = entropy_bounds(c, d, corrected)
    assert np.all(np.abs(exact - approx) <= radius)
    # narrow enough to be useful: far below the spread of entropies between positions (the
    # absolute floor, ~1.5e-6, covers log's error near x = 1 and p one ulp off)
    assert np.all(radius <= 1e-2 * np.abs(exact) + 2e-6)
