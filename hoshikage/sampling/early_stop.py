"""Exact early stop: the answer is final once nothing before its end can change.

A position, once unmasked, is never masked again (neither llama.cpp's loop nor this one
re-masks). The answer is the canvas after the prompt up to its first end-of-generation token;
when every position up to that token is decided, later steps can only fill positions after it,
so the answer is already what the full run would return.
"""
from __future__ import annotations

import numpy as np

__all__ = ["AnswerEnd"]


class AnswerEnd:
    """``decided(canvas)``: whether the answer in ``canvas`` (int32 [canvas]) is final.

    eog_ids: the model's end-of-generation token ids (int array, any order); n_prompt: the
    prompt's length; mask: the mask token id (never an end-of-generation id here).
    """

    def __init__(self, eog_ids: np.ndarray, n_prompt: int, mask: int) -> None:
        ids = np.unique(np.asarray(eog_ids, dtype=np.int64))
        if ids.ndim != 1:
            raise ValueError(f"eog_ids must be a 1-D array of token ids, got shape {ids.shape}")
        self.ids = ids[ids != mask]
        self.n_prompt, self.mask = n_prompt, mask

    def decided(self, canvas: np.ndarray) -> bool:
        answer = canvas[self.n_prompt:]
        ends = np.flatnonzero(np.isin(answer, self.ids))
        if ends.size == 0:
            return False  # no end yet: the answer is the whole canvas, final only when full
        return not np.any(answer[:ends[0]] == self.mask)
