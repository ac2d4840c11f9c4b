"""The sampler chain (top_k -> top_p -> temp -> dist) against llama.cpp.

Two oracles: llama.cpp's own samplers through libllama (``chain_ref``), and a literal
scalar transcription of the C written here (loops, float32 scalars, libm's expf) for
hypothesis to hammer with small, tie-heavy rows.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hoshikage.sampling import _stl
from hoshikage.sampling.filters import apply_chain
from hoshikage.sampling.random import MT19937Stream

f32 = np.float32


def _libm_expf():
    try:
        lib = ctypes.CDLL("libm.so.6")
    except OSError:
        return None
    lib.expf.restype, lib.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: f32(lib.expf(float(v)))


EXPF = _libm_expf()


def scalar_chain(row, top_k, top_p, temp, rnd):
    """llama-sampler.cpp transcribed one element at a time (orders from _stl, which
    test_stl checks against g++). Returns (selected, size, ids, p)."""
    ids = list(range(len(row)))
    logit = [f32(v) for v in row]
    size, srt = len(row), False

    def reorder(order):
        nonlocal ids, logit
        ids = [ids[o] for o in order] + [i for j, i in enumerate(ids) if j not in set(order)]
        logit = [logit[o] for o in order] + [v for j, v in enumerate(logit) if j not in set(order)]

    if top_k > 0:
        k = min(top_k, size)
        reorder(list(_stl.partial_sort_inplace_order(np.array(logit[:size], f32), k)))
        size, srt = k, True
    if f32(top_p) < f32(1):
        mx = logit[0] if srt else max(logit[:size])
        p = [EXPF(f32(v - mx)) for v in logit[:size]]
        cum = f32(0)
        for v in p:
            cum = f32(cum + v)
        p = [f32(v / cum) for v in p]
        if not srt:  # small arrays (<= 1024): sorted in place
            order = list(_stl.partial_sort_inplace_order(np.array(logit[:size], f32), size))
            p = [p[o] for o in order]
            reorder(order)
            srt = True
        cum, last = f32(0), size
        for i in range(size):
            cum = f32(cum + p[i])
            if cum >= f32(top_p):
                last = i + 1
                break
        size = last
    if f32(temp) > 0 and f32(temp) != f32(1):
        logit = [f32(v / f32(temp)) for v in logit]
    if size == 1:
        return 0, 1, ids[:1], [f32(1)]
    mx = logit[0] if srt else max(logit[:size])
    p = [EXPF(f32(v - mx)) for v in logit[:size]]
    total = 0.0
    for v in p:
        total += float(v)
    tgt, run, sel = total * rnd, 0.0, size - 1
    for i, v in enumerate(p):
        run += float(v)
        if run >= tgt:
            sel = i
            break
    return sel, size, ids[:size], [f32(float(v) / total) for v in p]


def ours(L, top_k, top_p, temp, seed):
    rows = [np.ascontiguousarray(L[i], dtype=f32) for i in range(L.shape[0])]
    rnd = MT19937Stream(seed).uniform_double(len(rows))
    c, d = apply_chain(rows, top_k_=top_k, top_p_=top_p, temp=temp, rnd=rnd)
    return c, d, rnd


@pytest.mark.skipif(EXPF is None, reason="libm.so.6 not loadable: not a glibc system")
@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 120), grid=st.sampled_from([0.0, 0.25, 1.0]),
       top_k=st.sampled_from([0, 1, 2, 5, 40, 130]), top_p=st.sampled_from([1.0, 0.9, 0.5, 0.05]),
       temp=st.sampled_from([0.0, 0.5, 1.0, 1.7]), seed=st.integers(0, 2**32 - 1),
       data_seed=st.integers(0, 2**31))
def test_chain_matches_scalar_transcription(n, grid, top_k, top_p, temp, seed, data_seed):
    rng = np.random.default_rng(data_seed)
    row = (rng.standard_normal(n) * 3).astype(f32)
    if grid:
        row = (np.round(row / grid) * grid).astype(f32)
    c, d, rnd = ours(row[None, :], top_k, top_p, temp, seed)
    sel, size, ids, p = scalar_chain(row, top_k, top_p, temp, float(rnd[0]))
    assert int(d.selected[0]) == sel and int(c.size[0]) == size
    assert int(d.token[0]) == ids[sel]
    got = d.p_all()[0, :size]
    assert (got.view(np.uint32) == np.array(p, f32).view(np.uint32)).all()


CONFIGS = [dict(), dict(temp=0.8), dict(top_k=40, top_p=0.95, temp=0.8), dict(top_k=1),
           dict(top_k=3, temp=1.3), dict(top_k=200), dict(top_k=200, top_p=0.5),
           dict(top_p=0.9), dict(top_p=0.3, temp=0.7), dict(top_p=0.999), dict(top_k=5000)]


@pytest.mark.parametrize("n", [50, 1500, 5000])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_chain_matches_llama_cpp(chain_ref, n, cfg):
    rng = np.random.default_rng(n)
    L = (rng.standard_normal((12, n)) * 3).astype(f32)
    L[1] = np.round(L[1] * 2) / 2  # ties everywhere
    L[2] = np.round(L[2])
    L[3, : n // 2] = -np.inf  # many -inf
    L[4] = np.float32(1.5)  # all equal
    L[5, 7] = np.float32(1e20)  # llama.cpp's bucket sort puts this last
    L[6] = L[6] * 20  # spread beyond the bucket range
    L[7] = (np.exp(L[7].astype(np.float64)) / -np.log(rng.random(n))).astype(f32)  # gumbel-like
    args = dict(top_k=cfg.get("top_k", 0), top_p=cfg.get("top_p", 1.0), temp=cfg.get("temp", 0.0))
    ref = chain_ref(L, seed=11, **args)
    c, d, _ = ours(L, args["top_k"], args["top_p"], args["temp"], 11)
    p_all = d.p_all()
    for i, (sel, size, srt, ids, p) in enumerate(ref):
        assert int(d.selected[i]) == sel, i
        assert int(c.size[i]) == size, i
        assert int(d.token[i]) == ids[sel], i
        assert (p_all[i, :size].view(np.uint32) == p.view(np.uint32)).all(), i
