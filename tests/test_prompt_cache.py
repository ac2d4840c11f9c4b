"""The prompt cache: a reused Context keeps the KV of whole aligned prompt chunks, so a chat's
next turn decodes only what is new, and the answer is bit-identical to an uncached run."""
from __future__ import annotations

import pytest

import hoshikage as hk
from hoshikage.context import PROMPT_CHUNK

TURNS = ["Tell me about the planet Mars in three sentences.", "Tell me more.", "And its moons?"]


@pytest.fixture
def ctx(smollm2):
    with hk.Context(smollm2, n_ctx=1024, n_threads=1) as c:
        yield c


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 7}],
                         ids=["greedy", "seeded"])
def test_turns_are_identical_to_uncached_runs_and_reuse_whole_chunks(smollm2, ctx, sampling):
    messages: list[dict] = []
    reused = []
    for turn in TURNS:
        messages.append({"role": "user", "content": turn})
        cached = hk.generate(smollm2, messages=messages, max_tokens=40, context=ctx, **sampling)
        fresh = hk.generate(smollm2, messages=messages, max_tokens=40, n_threads=1, **sampling)
        assert cached.tokens == fresh.tokens and cached.text == fresh.text
        assert fresh.cached_prompt_tokens == 0
        assert cached.cached_prompt_tokens % PROMPT_CHUNK == 0
        assert cached.cached_prompt_tokens < cached.prompt_tokens
        reused.append(cached.cached_prompt_tokens)
        messages.append({"role": "assistant", "content": cached.text})
    assert reused[0] == 0 and reused[-1] >= PROMPT_CHUNK  # later turns decode only what is new


def test_reuse_keeps_only_the_common_aligned_prefix(smollm2, ctx):
    tokens = list(range(1000, 1000 + 3 * PROMPT_CHUNK + 5))
    ctx.reuse_prefix(tokens)
    ctx.decode_prompt(tokens)
    assert ctx.cached_tokens == tokens
    changed = tokens[:2 * PROMPT_CHUNK + 3] + [7] + tokens[2 * PROMPT_CHUNK + 4:]
    assert ctx.reuse_prefix(changed) == 2 * PROMPT_CHUNK  # the chunk holding the change goes
    assert ctx.n_past == 2 * PROMPT_CHUNK and ctx.cached_tokens == tokens[:2 * PROMPT_CHUNK]
    assert ctx.reuse_prefix(tokens[:PROMPT_CHUNK]) == 0  # the last token is always decoded again


def test_generated_tokens_and_explicit_positions_are_not_reused(smollm2, ctx):
    tokens = list(range(2000, 2000 + PROMPT_CHUNK + 10))
    ctx.reuse_prefix(tokens)
    ctx.decode_prompt(tokens)
    ctx.decode([5, 6, 7])  # like generated tokens: one partial batch after the prompt
    longer = tokens + [5, 6, 7] + list(range(3000, 3000 + PROMPT_CHUNK))
    assert ctx.reuse_prefix(longer) == PROMPT_CHUNK  # only the whole chunk decoded by decode_prompt
    with pytest.raises(hk.errors.DecodeError):  # llama.cpp refuses to overwrite cached positions
        ctx.decode(tokens[:4], pos=0)
    assert ctx.cached_tokens == []  # after a failed decode the cache is no longer known
    assert ctx.reuse_prefix(tokens) == 0 and ctx.n_past == 0


def test_decode_prompt_refuses_a_cache_off_a_chunk_boundary(smollm2, ctx):
    ctx.decode([1, 2, 3])
    with pytest.raises(ValueError, match="chunk boundary"):
        ctx.decode_prompt([4, 5])
