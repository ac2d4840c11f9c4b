"""glibc expf / logf reproduced bit for bit (compared with this machine's libm)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from hoshikage.sampling import _libm


@pytest.fixture(scope="module")
def libm():
    try:
        lib = ctypes.CDLL("libm.so.6")
    except OSError:
        pytest.skip("libm.so.6 not loadable: not a glibc system")
    for name in ("expf", "logf"):
        getattr(lib, name).restype = ctypes.c_float
        getattr(lib, name).argtypes = [ctypes.c_float]
    return lib


def _call(fn, x: np.ndarray) -> np.ndarray:
    return np.array([fn(float(v)) for v in x], dtype=np.float32)


def _same(a, b):
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def _hard_exp_inputs(rng, n):
    """Inputs whose float64 exp lies near a float32 rounding midpoint (the exact path)."""
    x = (-rng.random(400_000) * 100).astype(np.float32)
    # twice as wide as the band the fast path trusts, so both sides of it are exercised
    danger = _libm._near_f32_midpoint(np.exp(x.astype(np.float64)), _libm._EXPF_BAND + 1)
    return x[danger][:n]


def test_expf(libm):
    rng = np.random.default_rng(0)
    x = np.concatenate([
        (-rng.random(6000) * 110).astype(np.float32),
        rng.normal(0, 20, 2000).astype(np.float32),
        _hard_exp_inputs(rng, 3000),
        np.array([0, -0.0, -np.inf, np.inf, np.nan, -87.33, -87.0, -103.97, -104, 88.0, 88.72,
                  88.73, 1e-30, -1e-30], dtype=np.float32)])
    ref = _call(libm.expf, x)
    with np.errstate(all="ignore"):
        assert _same(_libm.expf(x), ref).all()
        assert _same(_libm._expf_exact(x), ref).all()
        # the row-wise helper used by the samplers
        out = np.empty_like(x)
        rows = _libm.ExpfRows(len(x))
        rows.row(x, out, 0, False)
        rows.finish(out)
    assert _same(out, ref).all()


def test_logf(libm):
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(5000), rng.random(5000) ** 12]).astype(np.float32)
    x = (p + np.float32(1e-10)).astype(np.float32)  # what the entropy confidence feeds it
    x = np.concatenate([x, (rng.random(2000) * 1e4).astype(np.float32),
                        np.array([1.0, 0.99999994, 1.0000001, 1e-10, 2.0**-126], np.float32)])
    ref = _call(libm.logf, x)
    assert _same(_libm.logf(x), ref).all()
    assert _same(_libm._logf_exact(x), ref).all()
    out = np.empty_like(x)
    _libm.LogfRows(len(x)).row(x, out)
    assert _same(out, ref).all()
    special = np.array([0.0, -1.0, np.inf, np.nan, 1e-45], dtype=np.float32)
    with np.errstate(all="ignore"):
        assert _same(_libm.logf(special), _call(libm.logf, special)).all()


def test_numpy_alone_would_differ(libm):
    # Guards the premise: numpy's float32 exp is not glibc's, so the emulation matters.
    x = (-np.random.default_rng(2).random(5000) * 30).astype(np.float32)
    assert not _same(np.exp(x), _call(libm.expf, x)).all()
