"""The settled part of a diffusion answer while the model runs (opt-in block streaming).

The sampler never re-masks a position, so the canvas up to its first mask token is final:
under the block schedule that is every finished block (and sometimes more). The answer rules
are the final answer's (``diffusion.answer_tokens``: up to the first end-of-generation token,
at most ``max_tokens``; ``text_stream.find_stop``: cut at the first stop string), so the deltas
add up to the answer the generation returns.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .diffusion import answer_tokens
from .text_stream import find_stop, partial_stop_suffix


class SettledText:
    """Feed the canvas at each step; get back the new settled text (may be empty).

    Text that could still be cut by a stop string, or is an incomplete UTF-8 character, is held
    back. ``done`` turns true once the answer ended (an end-of-generation token, a stop string,
    or ``max_tokens``); nothing more is returned after that.
    """

    def __init__(self, model: Any, n_prompt: int, stop: Sequence[str] = (), max_tokens: int | None = None):
        self.model = model
        self.n_prompt = n_prompt
        self.stop = [s for s in stop if s]
        self.max_tokens = max_tokens
        self.sent = ""
        self.done = False

    def update(self, canvas: np.ndarray) -> str:
        if self.done:
            return ""
        text = self._settled_text(np.asarray(canvas)[self.n_prompt:])
        cut = find_stop(text, self.stop)
        if cut is not None:
            text, self.done = text[:cut], True
        elif not self.done:
            text = text[: len(text) - partial_stop_suffix(text, self.stop)]
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def _settled_text(self, answer: np.ndarray) -> str:
        """The text of the answer's tokens before its first mask (an incomplete last character
        dropped); sets ``done`` when the answer ends within them."""
        masked = np.flatnonzero(answer == self.model.mask_token)
        tokens, self.done = answer_tokens(self.model, answer[: masked[0] if len(masked) else len(answer)])
        if self.max_tokens is not None and len(tokens) >= self.max_tokens:
            tokens, self.done = tokens[: self.max_tokens], True
        return self.model.detokenize(tokens, remove_special=False, unparse_special=False).rstrip("\ufffd")
