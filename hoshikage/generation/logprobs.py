"""Log probabilities of generated tokens (autoregressive models), as OpenAI reports them.

For each generated token: its log probability under the model's distribution at that step
(log-softmax of the raw logits, temperature 1, before any sampler stage), and the ``top`` most
likely alternatives. That is what OpenAI's ``logprobs`` describe; the sampler (temperature,
top-k, grammar) decides which token is drawn, not these numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log probability (natural log); ``top``: the likeliest alternatives,
    most likely first (the token itself among them when it is one of them)."""

    token: int
    piece: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = field(default=())

    @property
    def text(self) -> str:
        return self.piece.decode("utf-8", "replace")


def token_logprob(model: Any, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """``token``'s log probability in ``logits`` (float32 ``[n_vocab]``, read before the next
    decode) and the ``top`` likeliest tokens (0 = none)."""
    row = np.asarray(logits, dtype=np.float64)
    peak = row.max()
    log_total = peak + np.log(np.exp(row - peak).sum())
    alternatives: tuple[tuple[int, bytes, float], ...] = ()
    if top > 0:
        best = np.argpartition(-row, top - 1)[:top]
        best = best[np.argsort(-row[best], kind="stable")]
        alternatives = tuple((int(t), model.token_to_piece(int(t)), float(row[t] - log_total)) for t in best)
    return TokenLogprob(int(token), model.token_to_piece(int(token)), float(row[token] - log_total), alternatives)
