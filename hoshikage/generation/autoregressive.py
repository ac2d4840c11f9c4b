"""Autoregressive generation: prefill, then one token at a time through llama.cpp's sampler chain."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

from .. import _ffi
from ..chat_format import Grammar
from ..context import Context
from ..model import Model
from .grammar_sampler import make_grammar_sampler, sample_checked
from .logprobs import TokenLogprob, token_logprob
from .params import SamplingParams
from .text_stream import TextStream
from .types import Chunk, Completion, Timings


def penalty_window(repeat_last_n: int, n_ctx: int) -> int:
    """The penalties sampler's look-back in tokens: -1 is the whole context, and no look-back
    is longer than the context (it could hold no more tokens). llama.cpp allocates a ring
    buffer of this many tokens up front, and would turn -1 into 0 (off)."""
    return n_ctx if repeat_last_n < 0 else min(repeat_last_n, n_ctx)


class SamplerChain:
    """An owned ``llama_sampler`` chain built from SamplingParams (freed by close()).

    ``n_ctx`` bounds the penalty look-back (see ``penalty_window``); top_k above the vocabulary
    acts as the whole vocabulary, as llama.cpp would clamp it."""

    def __init__(self, params: SamplingParams, n_vocab: int, n_ctx: int, grammar: Any = None):
        """``grammar``: an owned grammar sampler (``make_grammar_sampler``) put at the head of the
        chain, which then owns it; sampling then goes through the exception-safe shim."""
        lib = _ffi.lib()
        self._lib = lib
        self._checked = grammar is not None
        self.ptr = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda s: lib.llama_sampler_chain_add(self.ptr, s)  # noqa: E731 - the chain takes ownership
        if grammar is not None:
            add(grammar)
        p = params
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            add(lib.llama_sampler_init_penalties(n_vocab, penalty_window(p.repeat_last_n, n_ctx), p.repeat_penalty,
                                                 p.frequency_penalty, p.presence_penalty))
        if p.greedy:
            add(lib.llama_sampler_init_greedy())
            return
        if p.top_k > 0:
            add(lib.llama_sampler_init_top_k(min(p.top_k, n_vocab)))
        if p.top_p < 1.0:
            add(lib.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(lib.llama_sampler_init_min_p(p.min_p, 1))
        add(lib.llama_sampler_init_temp(p.temperature))
        add(lib.llama_sampler_init_dist(p.seed))

    def sample(self, ctx: Context) -> int:
        """Sample (and accept) the next token from the context's last logits row."""
        if self._checked:
            return sample_checked(self.ptr, ctx.ptr, -1)
        return int(self._lib.llama_sampler_sample(self.ptr, ctx.ptr, -1))

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            self._lib.llama_sampler_free(ptr)

    def __enter__(self) -> SamplerChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_autoregressive(model: Model, ctx: Context, prompt_tokens: Sequence[int], *, max_tokens: int,
                          sampling: SamplingParams, stop: Sequence[str] = (),
                          should_stop: Callable[[], bool] | None = None,
                          grammar: Grammar | None = None, logprobs: int | None = None) -> Iterator[Chunk]:
    """Yield text deltas as tokens are generated; the last chunk carries the Completion.

    prompt + max_tokens must fit ``ctx.n_ctx`` (checked by the caller). The KV of the longest
    prefix ``ctx`` already holds is reused (``Context.reuse_prefix``: a chat's next turn decodes
    only what is new); ``Completion.cached_prompt_tokens`` says how many. ``should_stop`` is polled before each token; true cancels. ``grammar``
    constrains every token (see ``grammar_sampler``); GrammarError if it reaches a dead end.
    ``logprobs`` (None = off, else how many alternatives, 0-20) adds each token's log probability.
    """
    t0 = time.perf_counter()
    cached = ctx.reuse_prefix(prompt_tokens)
    ctx.set_causal_attn(True)
    ctx.decode_prompt(prompt_tokens[cached:])
    t_prompt = time.perf_counter() - t0
    text = TextStream(stop)
    tokens: list[int] = []
    token_logprobs: list[TokenLogprob] = []
    finish = "length"
    first_token_at = None
    params = {**asdict(sampling), "max_tokens": max_tokens, "stop": list(stop), }
    if grammar is not None:
        params["grammar"] = "lazy" if grammar.lazy else "full"
    constraint = make_grammar_sampler(model, grammar) if grammar is not None else None
    with SamplerChain(sampling, model.n_vocab, ctx.n_ctx, grammar=constraint) as chain:
        while len(tokens) < max_tokens:
            if should_stop is not None and should_stop():
                finish = "cancelled"
                break
            tok = chain.sample(ctx)
            if first_token_at is None:
                first_token_at = time.perf_counter() - t0
            if model.is_eog(tok):
                finish = "stop"
                break
            tokens.append(tok)
            lp = [] if logprobs is None else [token_logprob(model, ctx.logits_view()[-1], tok, logprobs)]
            token_logprobs.extend(lp)
            delta = text.push(model.token_to_piece(tok, special=True))
            if text.stopped:
                finish = "stop"
                if delta or lp:
                    yield Chunk(delta, [tok], logprobs=lp)
                break
            if delta or lp:
                yield Chunk(delta, [tok], logprobs=lp)
            if len(tokens) < max_tokens:
                ctx.decode([tok], logits="last")
    tail = text.finish()
    timings = Timings(prompt_seconds=t_prompt, generation_seconds=time.perf_counter() - t0 - t_prompt,
                      first_token_seconds=first_token_at)
    completion = Completion(text=text.text, tokens=tokens, prompt_tokens=len(prompt_tokens),
                            cached_prompt_tokens=cached, logprobs=token_logprobs if logprobs is not None else None,
                            finish_reason=finish, kind="autoregressive", timings=timings, params=params)
    yield Chunk(tail, [], finish, completion)
