"""Logits functions that return only the rows a step needs (the prefix cache's), and the rules
for ``params.cache``.

A plain logits function returns every row: ``fn(tokens) -> float32 [canvas, n_vocab]``. A row
logits function has ``rows(tokens, need) -> (first, float32 [canvas - first, n_vocab])`` with
``0 <= first <= need``: the loop asks for the lowest row its step reads (``need``) and indexes
what comes back with ``row - first``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ParameterError
from .params import DiffusionParams, Schedule

__all__ = ["RowLogits", "fetch_rows", "check_cache"]


@runtime_checkable
class RowLogits(Protocol):
    def rows(self, tokens: np.ndarray, need: int) -> tuple[int, np.ndarray]: ...


def fetch_rows(fn, tokens: np.ndarray, need: int, shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """``(first, rows)`` from a plain or a row logits function, checked against the canvas
    ``shape`` ([canvas, n_vocab]); ValueError saying what came back otherwise."""
    if isinstance(fn, RowLogits):
        first, out = fn.rows(tokens, need)
    else:
        first, out = 0, fn(tokens)
    want = (shape[0] - first, shape[1])
    if not isinstance(first, (int, np.integer)) or not 0 <= first <= need:
        raise ValueError(f"a row logits function must return a first row in [0, {need}], got {first!r}")
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != want:
        got = f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"logits_fn must return a float32 array of shape {want}, got {got}")
    return int(first), out


def check_cache(params: DiffusionParams) -> None:
    """ParameterError naming ``cache`` when the prefix cache cannot serve ``params``: it needs the
    block schedule (its blocks are what it caches before), and no CFG (the unconditional pass
    masks the prompt, so the cached prefix is not that pass's prefix)."""
    if params.cache is None:  # cache_refresh is unused then, as eps is under the block schedule
        return
    if params.schedule != Schedule.BLOCK_BASED:
        raise ParameterError("cache='prefix' needs the block schedule (schedule=BLOCK_BASED with a "
                             f"block_length); got {Schedule(params.schedule).name}", "cache")
    if np.float32(params.cfg_scale) > 0:
        raise ParameterError(f"cache='prefix' cannot be combined with cfg_scale={params.cfg_scale}: the "
                             "unconditional pass masks the prompt, so the cached prompt is not its prompt",
                             "cache")
