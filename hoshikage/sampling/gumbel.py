"""LLaDA's gumbel perturbation of the logits (``add_gumbel_noise`` in diffusion.cpp).

The perturbed values ``exp(logit) / (-log u)**temperature`` replace the logits and go
through the sampler chain as if they were logits, in both modes.

* Reference (defect a): one call per step perturbs only the first ``n_vocab`` floats of
  the logits buffer -- row 0 -- in place, drawing ``n_vocab`` doubles (2 * n_vocab outputs)
  from the loop's stream even when no masked position reads row 0.
* Corrected: every sampled position gets its own noise over its own row, in float64.
"""
from __future__ import annotations

import numpy as np

from ._libm import expf
from .random import MT19937Stream

__all__ = ["reference_gumbel_row0", "corrected_gumbel_rows"]


def _noise(u: np.ndarray, temperature: float) -> np.ndarray:
    # std::max(noise, 1e-20) then std::pow(-std::log(noise), (double) temperature)
    return np.power(-np.log(np.maximum(u, 1e-20)), float(np.float32(temperature)))


def reference_gumbel_row0(rng: MT19937Stream, row0: np.ndarray | None, n_vocab: int,
                          temperature: float) -> np.ndarray | None:
    """Consume the reference's draws; return the perturbed copy of ``row0`` (float32
    [n_vocab]) if one is given (i.e. if some masked position reads row 0), else None.

    ``logits[i] = std::exp(logits[i]) / gumbel``: expf of the float, divided in double,
    stored as float. ``row0`` itself is never written (it may be llama.cpp's buffer).
    """
    if row0 is None:
        rng.skip(2 * n_vocab)
        return None
    g = _noise(rng.uniform_double(n_vocab), temperature)
    return (expf(row0).astype(np.float64) / g).astype(np.float32)


def corrected_gumbel_rows(rng: MT19937Stream, rows: np.ndarray, temperature: float) -> None:
    """Perturb each row of ``rows`` [r, n_vocab] float32 in place with its own noise,
    computed in float64 (r * n_vocab doubles from ``rng``, row after row)."""
    for i in range(rows.shape[0]):
        g = _noise(rng.uniform_double(rows.shape[1]), temperature)
        with np.errstate(over="ignore"):
            rows[i] = np.exp(rows[i].astype(np.float64)) / g
