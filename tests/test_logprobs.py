"""Log probabilities of generated tokens (hoshikage.generation.logprobs)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import hoshikage as hk
from hoshikage.errors import ParameterError
from hoshikage.generation.logprobs import token_logprob


def test_greedy_tokens_are_the_likeliest_and_probabilities_are_normalised(smollm2):
    out = hk.generate(smollm2, "The capital of France is", max_tokens=6, temperature=0, logprobs=4)
    assert len(out.logprobs) == len(out.tokens)
    for entry, token in zip(out.logprobs, out.tokens):
        assert entry.token == token and entry.top[0][0] == token and entry.logprob == entry.top[0][2]
        assert [lp for _, _, lp in entry.top] == sorted((lp for _, _, lp in entry.top), reverse=True)
        assert 0 < sum(math.exp(lp) for _, _, lp in entry.top) <= 1 + 1e-9


def test_streamed_chunks_carry_every_token_once(smollm2):
    chunks = list(hk.generate(smollm2, "Once upon a time", max_tokens=12, temperature=0, logprobs=0, stream=True))
    streamed = [lp for c in chunks for lp in c.logprobs]
    final = chunks[-1].completion
    assert [lp.token for lp in streamed] == final.tokens == [lp.token for lp in final.logprobs]
    assert all(lp.top == () for lp in streamed)


def test_off_by_default_and_checked(smollm2):
    assert hk.generate(smollm2, "Hi", max_tokens=2, temperature=0).logprobs is None
    with pytest.raises(ParameterError) as err:
        hk.generate(smollm2, "Hi", max_tokens=2, logprobs=21)
    assert err.value.param == "logprobs"


def test_log_softmax_matches_a_direct_computation(smollm2):
    logits = np.array([2.0, 1.0, -3.0] + [-50.0] * (smollm2.n_vocab - 3), dtype=np.float32)
    entry = token_logprob(smollm2, logits, 1, 2)
    expected = 1.0 - math.log(math.exp(2.0) + math.exp(1.0) + math.exp(-3.0) + (smollm2.n_vocab - 3) * math.exp(-50))
    assert entry.logprob == pytest.approx(expected, abs=1e-9) and [t for t, _, _ in entry.top] == [0, 1]
