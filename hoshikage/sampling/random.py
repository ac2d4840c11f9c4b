"""``std::mt19937`` streams and libstdc++'s uniform real draws, vectorised with numpy.

llama.cpp's diffusion loop uses three independent ``std::mt19937`` streams, all seeded
with ``params.seed``: the loop's own ``rng`` (RANDOM confidence, ORIGIN transfer draws,
gumbel noise), the sampler chain's ``dist`` stage and the separate ``dist_sampler`` used
when ``alg_temp > 0``. Each is an :class:`MT19937Stream` here.

The draws mirror libstdc++ (g++ 12, ``bits/random.tcc`` ``generate_canonical``):

* ``uniform_real_distribution<float>(0, 1)``: one 32-bit output ``u``;
  ``float(u) / 2**32`` in float32, and a result that rounds to 1.0 becomes
  ``nextafter(1.0f, 0)``.
* ``uniform_real_distribution<double>(0, 1)``: two outputs ``u1, u2``;
  ``(u1 + u2 * 2**32) / 2**64`` in float64 (the sum rounds once), same fix-up.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["LLAMA_DEFAULT_SEED", "MT19937Stream", "normalize_seed", "canonical_float",
           "canonical_double"]

#: llama.cpp's "pick a random seed" value; its ``dist`` samplers then seed from the OS.
LLAMA_DEFAULT_SEED = 0xFFFFFFFF

_F32_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))
_F64_BELOW_ONE = np.nextafter(1.0, 0.0)


def normalize_seed(seed: int) -> int:
    """Map a seed to the uint32 that ``std::mt19937`` and ``llama_sampler_init_dist`` see.

    diffusion_params.seed is an ``int32_t``: negative values wrap (two's complement), so
    ``-1`` and ``0xFFFFFFFF`` are the same seed. Accepts ``[-2**31, 2**32)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ParameterError(f"seed must be an integer, got {seed!r}", "seed")
    seed = int(seed)
    if not -(2**31) <= seed < 2**32:
        raise ParameterError(f"seed must be in [-2**31, 2**32), got {seed}", "seed")
    return seed & 0xFFFFFFFF


def canonical_float(u: np.ndarray) -> np.ndarray:
    """``generate_canonical<float, 24>`` of 32-bit outputs ``u``: float32, in [0, 1)."""
    r = np.asarray(u).astype(np.float32) / np.float32(2.0**32)
    r[r >= np.float32(1.0)] = _F32_BELOW_ONE
    return r


def canonical_double(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """``generate_canonical<double, 53>`` of output pairs (u1 drawn first): float64."""
    r = (np.asarray(u1).astype(np.float64) + np.asarray(u2).astype(np.float64) * 2.0**32) / 2.0**64
    r[r >= 1.0] = _F64_BELOW_ONE
    return r


def _mt19937_key(seed: int) -> np.ndarray:
    """The 624-word state ``std::mt19937(seed)`` starts from (Knuth's init_genrand)."""
    key = np.empty(624, dtype=np.uint32)
    x = seed & 0xFFFFFFFF
    key[0] = x
    for i in range(1, 624):
        x = (1812433253 * (x ^ (x >> 30)) + i) & 0xFFFFFFFF
        key[i] = x
    return key


class MT19937Stream:
    """One ``std::mt19937`` stream: ``u32``, ``uniform_float`` and ``uniform_double`` draws.

    All methods draw ``n`` values at once, in stream order, exactly as ``n`` successive
    C++ calls would.
    """

    def __init__(self, seed: int) -> None:
        self.seed = normalize_seed(seed)
        self._bitgen = np.random.MT19937(0)
        # pos=624 makes the first draw regenerate the block, as std::mt19937 does.
        self._bitgen.state = {
            "bit_generator": "MT19937",
            "state": {"key": _mt19937_key(self.seed), "pos": 624},
        }
        self.n_drawn = 0  # 32-bit outputs consumed so far (for tests and diagnostics)

    def u32(self, n: int) -> np.ndarray:
        """``n`` raw outputs, uint64 [n] holding 32-bit values."""
        self.n_drawn += n
        return self._bitgen.random_raw(n) if n > 0 else np.empty(0, dtype=np.uint64)

    def skip(self, n: int) -> None:
        """Discard ``n`` outputs (in chunks, so skipping a vocabulary's worth stays small)."""
        while n > 0:
            m = min(n, 1 << 20)
            self.u32(m)
            n -= m

    def uniform_float(self, n: int) -> np.ndarray:
        """``n`` draws of ``uniform_real_distribution<float>(0, 1)``: float32 [n]."""
        return canonical_float(self.u32(n))

    def uniform_double(self, n: int) -> np.ndarray:
        """``n`` draws of ``uniform_real_distribution<double>(0, 1)`` (two outputs each)."""
        u = self.u32(2 * n)
        return canonical_double(u[0::2], u[1::2])
