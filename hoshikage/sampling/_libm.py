"""glibc's ``expf`` and ``logf``, bit for bit, vectorised with numpy.

llama.cpp computes probabilities with ``expf`` and the entropy confidence with ``logf``
(both glibc >= 2.27's table-driven implementations, run through their FMA variants on
x86-64 CPUs with FMA). numpy's own float32 ``exp``/``log`` differ from glibc in the last bit
now and then, which is enough to change a float sum, so we reproduce glibc instead.

Fast path + exact repair: evaluate in float64 (accurate to ~1e-16), round to float32, and
find the few elements whose float64 value lies so close to a float32 rounding boundary that
glibc's own approximation error (expf: < 1.69 * 2**-34 relative; logf: the non-FMA vs FMA
gap, < 2**-46) could round it the other way. Only those are recomputed with glibc's exact
algorithm, whose fused multiply-adds are emulated with error-free transformations.
Constants and tables are those of glibc's ``e_exp2f_data.c`` / ``e_logf_data.c``.
"""
from __future__ import annotations

import sys
from decimal import Decimal, getcontext

import numpy as np

__all__ = ["expf", "logf"]

_f = float.fromhex
_LITTLE = sys.byteorder == "little"

# --- error-free transformations (float64) ------------------------------------------------

_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp splitting


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a*b == p + e`` exactly (Dekker), for finite non-huge operands."""
    p = a * b
    ca = _SPLIT * a
    ah = ca - (ca - a)
    al = a - ah
    cb = _SPLIT * b
    bh = cb - (cb - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def _fma(a, b, c) -> np.ndarray:
    """``fma(a, b, c)`` (one rounding) via TwoProd + TwoSum.

    Exact except when the low-order sum itself hits a double-rounding tie, which needs the
    exact result within 2**-106 relative of a double midpoint; irrelevant at float32 output.
    """
    a, b, c = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                  np.asarray(c, np.float64))
    p, e = _two_prod(a, b)
    s = p + c
    bp = s - p
    t = (p - (s - bp)) + (c - bp)  # TwoSum error of p + c
    return s + (t + e)


def _near_f32_midpoint(y: np.ndarray, band_log2: int, check_range: bool = True) -> np.ndarray:
    """True where double ``y`` is within ``2**band_log2`` relative of a float32 midpoint.

    float32 keeps the top 23 of the 52 mantissa bits; a midpoint has the 29 dropped bits
    (all in the low 32-bit word) equal to 2**28. With ``check_range`` also flags values
    outside float32's normal range, zero and NaN (the exact paths handle those).
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    band = 1 << (52 + band_log2 + 1)  # in units of the last mantissa bit; +1: mantissa < 2
    if _LITTLE:
        lo = y.reshape(-1).view(np.uint32)[0::2]
        t = lo + np.uint32((band - (1 << 28)) % (1 << 32))
        t <<= np.uint32(3)  # drops the 3 bits above the 29 that float32 rounding discards
        danger = t < np.uint32(2 * band << 3)
    else:
        bits = y.reshape(-1).view(np.uint64)
        t = (bits + np.uint64((band - (1 << 28)) % (1 << 64))) & np.uint64((1 << 29) - 1)
        danger = t < np.uint64(2 * band)
    danger = danger.reshape(y.shape)
    if check_range:
        ay = np.abs(y)
        danger |= ~((ay >= 2.0**-126) & (ay < 2.0**127))
    return danger


# --- expf ----------------------------------------------------------------------------------

_EXP_N = 32
# glibc's expf is exact to 1.69 * 2**-34 relative before its final rounding (e_expf.c), so
# a float64 exp (error ~2**-52) further than 2**-33 from a float32 midpoint rounds alike.
_EXPF_BAND = -33


def _exp2_table() -> np.ndarray:
    """``uint64(2**(i/32)) - (i << 47)``: glibc's ``__exp2f_data.tab``, derived exactly."""
    getcontext().prec = 60
    tab = []
    for i in range(_EXP_N):
        v = float(Decimal(2) ** (Decimal(i) / Decimal(_EXP_N)))  # correctly rounded
        bits = int(np.float64(v).view(np.uint64))
        tab.append((bits - (i << (52 - 5))) & 0xFFFFFFFFFFFFFFFF)
    return np.array(tab, dtype=np.uint64)


_EXP2_TAB = _exp2_table()
_EXP_INVLN2N = _f("0x1.71547652b82fep+0") * _EXP_N
_EXP_C = (_f("0x1.c6af84b912394p-5") / _EXP_N**3, _f("0x1.ebfce50fac4f3p-3") / _EXP_N**2,
          _f("0x1.62e42ff0c52d6p-1") / _EXP_N)
_EXP_OFLOW = np.float32(_f("0x1.62e42ep6"))  # x > log(2**128): +inf
_EXP_UFLOW = np.float32(-_f("0x1.9fe368p6"))  # x < log(2**-150): 0
# expf(x) is a normal float32 (>= 2**-126, < 2**127) strictly inside these bounds.
_EXPF_NORMAL_LO = np.float32(-87.0)
_EXPF_NORMAL_HI = np.float32(88.0)


def _expf_exact(x: np.ndarray) -> np.ndarray:
    """glibc ``__expf_fma`` on float32 [m] -> float32 [m] (the slow, exact path)."""
    xd = x.astype(np.float64)
    with np.errstate(all="ignore"):
        ph, pl = _two_prod(np.full_like(xd, _EXP_INVLN2N), xd)
        # kd = fma(InvLn2N, xd, 0x1.8p52) - 0x1.8p52: round-half-even of the exact product.
        k = np.rint(ph)
        frac = ph - k
        k = np.where((frac == 0.5) & (pl > 0), k + 1, k)
        k = np.where((frac == -0.5) & (pl < 0), k - 1, k)
        k = np.where(np.isfinite(k), k, 0.0)
        r = (ph - k) + pl  # fma(InvLn2N, xd, -kd): ph - k is exact
        ki = k.astype(np.int64)
        t = _EXP2_TAB[ki % _EXP_N] + (ki.astype(np.uint64) << np.uint64(47))
        s = t.view(np.float64)
        z = _fma(_EXP_C[0], r, _EXP_C[1])
        r2 = r * r
        y = _fma(_EXP_C[2], r, 1.0)
        y = _fma(z, r2, y)
        out = (y * s).astype(np.float32)
    out = np.where(x > _EXP_OFLOW, np.float32(np.inf), out)
    out = np.where(x < _EXP_UFLOW, np.float32(0.0), out)
    return np.where(np.isnan(x), x, out).astype(np.float32)


class ExpfRows:
    """glibc ``expf`` over many rows of one length, reusing buffers (for long rows).

    ``row(x, out)`` writes expf(x) into ``out`` (float32) except at the few indices it
    returns, which ``finish`` fixes for all rows in one exact evaluation.
    """

    def __init__(self, m: int) -> None:
        self.e64 = np.empty(m, dtype=np.float64)
        self.t = np.empty(m, dtype=np.uint32)
        self.d = np.empty(m, dtype=bool)
        band = 1 << (52 + _EXPF_BAND + 1)  # as in _near_f32_midpoint
        self.add = np.uint32((band - (1 << 28)) % (1 << 32))
        self.lim = np.uint32(2 * band << 3)
        self.fix_at: list = []
        self.fix_x: list = []

    def row(self, x: np.ndarray, out: np.ndarray, offset: int, in_range: bool) -> None:
        """expf of float32 [k] ``x`` (k <= m) into ``out``; ``offset`` locates ``out`` in the
        flat array later given to ``finish``; ``in_range``: all x in [-87, 88]."""
        k = len(x)
        e64, t, d = self.e64[:k], self.t[:k], self.d[:k]
        with np.errstate(all="ignore"):
            np.copyto(e64, x)  # exp(x, out=e64) alone would run numpy's float32 exp
            np.exp(e64, out=e64)
            out[...] = e64
            if _LITTLE:
                np.add(e64.view(np.uint32)[0::2], self.add, out=t)
                np.left_shift(t, np.uint32(3), out=t)
                np.less(t, self.lim, out=d)
            else:
                d[...] = _near_f32_midpoint(e64, _EXPF_BAND, check_range=False)
            if not in_range:
                d |= ~((x >= _EXPF_NORMAL_LO) & (x <= _EXPF_NORMAL_HI))
        idx = np.flatnonzero(d)
        if idx.size:
            self.fix_at.append(idx + offset)
            self.fix_x.append(x[idx])

    def finish(self, flat_out: np.ndarray) -> None:
        if self.fix_at:
            flat_out[np.concatenate(self.fix_at)] = _expf_exact(np.concatenate(self.fix_x))
        self.fix_at, self.fix_x = [], []


def expf_danger(x: np.ndarray, e64: np.ndarray) -> np.ndarray:
    """Flat indices where ``float32(e64)`` (e64 = exp(x) in float64) may differ from glibc."""
    danger = _near_f32_midpoint(e64, _EXPF_BAND, check_range=False).reshape(-1)
    # Results outside float32's normal range (and NaN / inf inputs) take the exact path;
    # tested on x (float32) since logits minus their max are nearly always in range.
    if x.size and not (x.min() >= _EXPF_NORMAL_LO and x.max() <= _EXPF_NORMAL_HI):
        flat = x.reshape(-1)
        danger |= ~((flat >= _EXPF_NORMAL_LO) & (flat <= _EXPF_NORMAL_HI))
    return np.flatnonzero(danger)


def expf(x: np.ndarray, e64: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """glibc ``expf`` elementwise: float32 array (any shape) -> float32, same shape.

    ``e64`` may pass in ``np.exp(x, dtype=float64)`` if the caller has it; ``out`` receives
    the result (float32, same shape).
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(all="ignore"):
        if e64 is None:
            e64 = np.exp(x, dtype=np.float64)
        if out is None:
            out = e64.astype(np.float32)
        else:
            out[...] = e64
        danger = expf_danger(x, e64)
    if danger.size:
        out.reshape(-1)[danger] = _expf_exact(x.reshape(-1)[danger])
    return out


# --- logf ----------------------------------------------------------------------------------

_LOGF_TAB = np.array([
    ("0x1.661ec79f8f3bep+0", "-0x1.57bf7808caadep-2"), ("0x1.571ed4aaf883dp+0", "-0x1.2bef0a7c06ddbp-2"),
    ("0x1.49539f0f010bp+0", "-0x1.01eae7f513a67p-2"), ("0x1.3c995b0b80385p+0", "-0x1.b31d8a68224e9p-3"),
    ("0x1.30d190c8864a5p+0", "-0x1.6574f0ac07758p-3"), ("0x1.25e227b0b8eap+0", "-0x1.1aa2bc79c81p-3"),
    ("0x1.1bb4a4a1a343fp+0", "-0x1.a4e76ce8c0e5ep-4"), ("0x1.12358f08ae5bap+0", "-0x1.1973c5a611cccp-4"),
    ("0x1.0953f419900a7p+0", "-0x1.252f438e10c1ep-5"), ("0x1p+0", "0x0p+0"),
    ("0x1.e608cfd9a47acp-1", "0x1.aa5aa5df25984p-5"), ("0x1.ca4b31f026aap-1", "0x1.c5e53aa362eb4p-4"),
    ("0x1.b2036576afce6p-1", "0x1.526e57720db08p-3"), ("0x1.9c2d163a1aa2dp-1", "0x1.bc2860d22477p-3"),
    ("0x1.886e6037841edp-1", "0x1.1058bc8a07ee1p-2"), ("0x1.767dcf5534862p-1", "0x1.4043057b6ee09p-2"),
], dtype=object)
_LOGF_INVC = np.array([_f(a) for a in _LOGF_TAB[:, 0]])
_LOGF_LOGC = np.array([_f(a) for a in _LOGF_TAB[:, 1]])
_LOGF_LN2 = _f("0x1.62e42fefa39efp-1")
_LOGF_A = (_f("-0x1.00ea348b88334p-2"), _f("0x1.5575b0be00b6ap-2"), _f("-0x1.ffffef20a4123p-2"))
_LOGF_OFF = np.uint32(0x3F330000)


def _logf_reduce(x: np.ndarray):
    """glibc logf's argument reduction: ``x = 2**k * z``, table index ``i``."""
    ix = x.view(np.uint32).copy()
    sub = (ix >= np.uint32(1)) & (ix < np.uint32(0x00800000))  # positive subnormals
    if sub.any():
        ix[sub] = (x[sub] * np.float32(2.0**23)).view(np.uint32) - np.uint32(23 << 23)
    tmp = ix - _LOGF_OFF
    i = (tmp >> np.uint32(19)) % np.uint32(16)
    k = tmp.view(np.int32) >> np.int32(23)
    iz = ix - (tmp & np.uint32(0x1FF << 23))
    z = iz.view(np.float32).astype(np.float64)
    return z, i, k.astype(np.float64)


def _logf_specials(x: np.ndarray, res: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        res = np.where(x == np.float32(1.0), np.float32(0.0), res)
        res = np.where(x == 0, np.float32(-np.inf), res)
        res = np.where((x < 0) | np.isnan(x), np.float32(np.nan), res)
        res = np.where(x == np.inf, np.float32(np.inf), res)
    return res.astype(np.float32)


def _logf_exact(x: np.ndarray) -> np.ndarray:
    """glibc ``__logf_fma`` on float32 [m] -> float32 [m] (the slow, exact path)."""
    z, i, k = _logf_reduce(x)
    with np.errstate(all="ignore"):
        invc, logc = _LOGF_INVC[i], _LOGF_LOGC[i]
        ph, pl = _two_prod(z, invc)
        r = (ph - 1.0) + pl  # fma(z, invc, -1); ph - 1 is exact
        y0 = _fma(k, _LOGF_LN2, logc)
        r2 = r * r
        y = _fma(_LOGF_A[1], r, _LOGF_A[2])
        y = _fma(_LOGF_A[0], r2, y)
        y = _fma(y, r2, y0 + r)
    return _logf_specials(x, y.astype(np.float32))


def logf(x: np.ndarray) -> np.ndarray:
    """glibc ``logf`` elementwise: float32 array (any shape) -> float32, same shape.

    logf's own error (0.82 ulp) is too large to start from numpy's log, so the float64
    evaluation follows glibc's algorithm without fused multiply-adds; only values within
    2**-44 of a float32 midpoint are redone with the FMAs emulated.
    """
    x = np.asarray(x, dtype=np.float32)
    z, i, k = _logf_reduce(x)
    with np.errstate(all="ignore"):
        invc, logc = _LOGF_INVC[i], _LOGF_LOGC[i]
        r = z * invc - 1.0
        y0 = logc + k * _LOGF_LN2
        r2 = r * r
        y = _LOGF_A[1] * r + _LOGF_A[2]
        y = _LOGF_A[0] * r2 + y
        y = y * r2 + (y0 + r)
        res = y.astype(np.float32)
        danger = _near_f32_midpoint(y, -44) | (x == np.float32(1.0)) | ~(x > 0) | (x == np.inf)
    if danger.any():
        res[danger] = _logf_exact(x[danger])
    return res


def _logf_tables() -> tuple[np.ndarray, np.ndarray]:
    """invc and y0 = logc + k*Ln2 (as glibc rounds it without FMA) for every value of
    ``(ix - OFF) >> 19``, which holds both the exponent k and the table index i."""
    j = np.arange(1 << 13)
    i = j & 15
    k = np.where(j >> 4 >= 256, (j >> 4) - 512, j >> 4).astype(np.float64)
    return _LOGF_INVC[i], _LOGF_LOGC[i] + k * _LOGF_LN2


_LOGF_INVC13, _LOGF_Y013 = _logf_tables()
# Both in one table: one gather of 16-byte items is cheaper than two of 8 (numpy's take).
_LOGF_TAB13 = _LOGF_INVC13 + 1j * _LOGF_Y013


_LOGF_SLICE = 16384  # keeps the float64 temporaries in L2


class LogfRows:
    """glibc ``logf`` over rows of one length of positive normal floats, reusing buffers.

    The float64 evaluation of :func:`logf` (glibc's algorithm without FMAs) in place, with
    the exponent and table lookups folded into two 8192-entry tables; values near a
    float32 midpoint are redone exactly before returning.
    """

    def __init__(self, m: int) -> None:
        m = min(m, _LOGF_SLICE)
        self.u = np.empty(m, dtype=np.uint32)
        self.j = np.empty(m, dtype=np.intp)
        self.r = np.empty(m, dtype=np.float64)
        self.r2 = np.empty(m, dtype=np.float64)
        self.y = np.empty(m, dtype=np.float64)
        self.t = np.empty(m, dtype=np.float64)
        self.c = np.empty(m, dtype=np.complex128)

    def row(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out[:] = logf(x)`` for float32 [k] ``x`` (k <= m), in cache-sized slices."""
        if not (x.min() >= np.float32(2.0**-126) and x.max() < np.float32(np.inf)):
            out[...] = logf(x)
            return
        for a in range(0, len(x), _LOGF_SLICE):
            self._slice(x[a:a + _LOGF_SLICE], out[a:a + _LOGF_SLICE])

    def _slice(self, x: np.ndarray, out: np.ndarray) -> None:
        k = len(x)
        u, j, r, r2, y, t, c = (b[:k] for b in (self.u, self.j, self.r, self.r2, self.y,
                                                self.t, self.c))
        ix = x.view(np.uint32)
        np.subtract(ix, _LOGF_OFF, out=u)  # tmp
        np.right_shift(u, np.uint32(19), out=j)
        np.take(_LOGF_TAB13, j, out=c, mode="clip")  # (invc, y0); take: numpy's fastest
        np.bitwise_and(u, np.uint32(0xFF800000), out=u)
        np.subtract(ix, u, out=u)  # iz: x scaled into [OFF, 2*OFF)
        np.multiply(u.view(np.float32), c.real, out=r)
        r -= 1.0
        np.add(c.imag, r, out=t)  # y0 + r
        np.multiply(r, r, out=r2)
        np.multiply(r, _LOGF_A[1], out=y)
        y += _LOGF_A[2]
        np.multiply(r2, _LOGF_A[0], out=r)  # r is free now
        y += r
        y *= r2
        y += t
        out[...] = y
        danger = np.flatnonzero(_near_f32_midpoint(y, -44, check_range=False))
        if danger.size:
            out[danger] = _logf_exact(x[danger])
