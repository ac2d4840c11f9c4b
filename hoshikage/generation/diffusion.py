"""Diffusion generation: glue between a Context and the numpy diffusion loop.

The loop (``hoshikage.sampling.run_diffusion``) pulls logits through ``logits_fn``: one
non-causal pass of the whole canvas, read back as a zero-copy ``[canvas, n_vocab]`` view.
Everything here is bookkeeping: canvas size, context size, causal attention off during the
loop and restored after, and turning the final canvas into an answer.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from enum import IntEnum

import numpy as np

from ..context import Context
from ..errors import ParameterError
from ..model import Model
from ..sampling import (DiffusionResult, StepCallback, plan_block_schedule, run_diffusion,
                        validate_params)
from ..sampling.params import DiffusionParams, Schedule
from .prefix_cache import PrefixCache, check_cache_model
from .text_stream import find_stop
from .types import Chunk, Completion, Timings


def diffuse(model: Model, ctx: Context | None, prompt_tokens: Sequence[int], *, canvas_length: int,
            params: DiffusionParams, step_callback: StepCallback | None = None,
            n_threads: int | None = None) -> DiffusionResult:
    """Run the numpy diffusion loop over ``ctx``: each step is one non-causal pass of the
    whole canvas, read back as a zero-copy ``[canvas, n_vocab]`` view, sampled on
    ``ctx.n_threads`` threads. Causal attention is off for the loop and restored afterwards.
    ``ctx.n_ubatch`` must be >= canvas_length.

    With ``params.cache == "prefix"`` the passes run on the model's twin through the prefix KV
    cache (prefix_cache.py, its own context, freed at the end); ``ctx`` (may be None: then
    ``n_threads``) only lends its thread count."""
    if params.cache == "prefix":
        plan = plan_block_schedule(canvas_length, len(prompt_tokens), params.steps, params.block_length)
        with PrefixCache(model, canvas_length=canvas_length, blocks=plan.blocks, shift=model.shift_logits,
                         n_threads=ctx.n_threads if ctx is not None else n_threads,
                         refresh_every=params.cache_refresh) as cache:
            return _run(model, prompt_tokens, canvas_length, params, step_callback, cache, cache.ctx.n_threads)

    def logits_fn(tokens: np.ndarray) -> np.ndarray:
        ctx.decode(tokens, logits="all", pos=0)
        return ctx.logits_view()

    ctx.set_causal_attn(False)
    try:
        return _run(model, prompt_tokens, canvas_length, params, step_callback, logits_fn, ctx.n_threads)
    finally:
        ctx.set_causal_attn(True)


def _run(model: Model, prompt_tokens: Sequence[int], canvas_length: int, params: DiffusionParams,
         step_callback: StepCallback | None, logits_fn, threads: int) -> DiffusionResult:
    return run_diffusion(np.asarray(prompt_tokens, dtype=np.int32), canvas_length=canvas_length,
                         mask_token_id=model.mask_token, n_vocab=model.n_vocab, logits_fn=logits_fn,
                         params=params, shift_logits=model.shift_logits, step_callback=step_callback,
                         threads=threads, eog_ids=end_of_generation_ids(model))


_EOG_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its ids, found once


def end_of_generation_ids(model: Model) -> np.ndarray:
    """The token ids that end an answer (``model.is_eog``), int32 [k]: what early stop looks for."""
    ids = _EOG_IDS.get(model)
    if ids is None:
        ids = np.array([t for t in range(model.n_vocab) if model.is_eog(t)], dtype=np.int32)
        _EOG_IDS[model] = ids
    return ids


def answer_tokens(model: Model, canvas_after_prompt: np.ndarray) -> tuple[list[int], bool]:
    """The answer: canvas tokens up to the first end-of-generation token; and whether one was found."""
    out = []
    for tok in canvas_after_prompt.tolist():
        if model.is_eog(tok):
            return out, True
        out.append(tok)
    return out, False


def plan_canvas(n_prompt: int, max_tokens: int, params: DiffusionParams, *, limit: int,
                adjust: bool) -> tuple[int, DiffusionParams, list[str]]:
    """Canvas length and final params for a request, or ParameterError naming what does not fit.

    ``limit`` is the largest canvas the context allows (its n_ubatch). With ``adjust``, a
    canvas past the limit is cut to it, and block-schedule divisibility is restored by
    rounding up (steps) or down/up (canvas); each change is described in the notes.
    """
    notes: list[str] = []
    if n_prompt >= limit:
        raise ParameterError(f"the prompt has {n_prompt} tokens, which leaves no room in a canvas of at most {limit}",
                             "prompt")
    canvas = n_prompt + max_tokens
    if canvas > limit:
        if not adjust:
            raise ParameterError(f"max_tokens={max_tokens} makes a canvas of {canvas} tokens; the context allows "
                                 f"{limit}", "max_tokens")
        notes.append(f"max_tokens lowered from {max_tokens} to {limit - n_prompt} to fit the context ({limit})")
        canvas = limit
    if params.schedule == Schedule.BLOCK_BASED:
        plan = plan_block_schedule(canvas, n_prompt, params.steps, params.block_length, adjust=adjust)
        if plan.canvas_length > limit:  # rounding up overflowed the context: round down instead
            down = limit // params.block_length * params.block_length
            if down <= n_prompt:
                raise ParameterError(f"block_length={params.block_length}: no multiple of it fits between the "
                                     f"prompt ({n_prompt} tokens) and the context ({limit})", "block_length")
            plan = plan_block_schedule(down, n_prompt, params.steps, params.block_length, adjust=True)
        canvas = plan.canvas_length
        if plan.steps != params.steps:
            params = replace(params, steps=plan.steps)
        notes.extend(plan.notes)
    return canvas, params, notes


def stream_diffusion(model: Model, prompt_tokens: Sequence[int], *, max_tokens: int, params: DiffusionParams,
                     stop: Sequence[str] = (), adjust: bool = True, context: Context | None = None,
                     n_ctx: int | None = None, n_threads: int | None = None,
                     on_step: Callable[[int, int, np.ndarray], bool | None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Iterator[Chunk]:
    """Validate eagerly, then return an iterator yielding the answer as one chunk (pseudo-streaming)."""
    mask = model.mask_token
    if mask is None:
        raise ValueError(f"{model.path.name} is a diffusion model without a mask token (tokenizer.ggml.mask_token_id)")
    validate_params(params)
    if params.cache is not None:
        check_cache_model(model)  # an arch without a twin is refused before any work
    limit = context.n_ubatch if context is not None else (n_ctx or model.n_ctx_train)
    canvas, params, notes = plan_canvas(len(prompt_tokens), max_tokens, params, limit=limit, adjust=adjust)

    def step_callback(step: int, total: int, tokens: np.ndarray) -> bool:
        if should_stop is not None and should_stop():
            return False
        return on_step is None or on_step(step, total, tokens) is not False

    def run() -> Iterator[Chunk]:
        ctx = context
        if ctx is None and params.cache is None:  # the prefix cache makes its own context
            ctx = Context(model, n_ctx=canvas, n_batch=canvas, n_ubatch=canvas, n_threads=n_threads)
        try:
            result = diffuse(model, ctx, prompt_tokens, canvas_length=canvas, params=params,
                             step_callback=step_callback, n_threads=n_threads)
            finish = getattr(on_step, "finish", None)  # e.g. hoshikage.progress_bar(): fill and close it
            if finish is not None:
                finish(result.cancelled)
        finally:
            if context is None and ctx is not None:
                ctx.close()
        yield _to_chunk(model, len(prompt_tokens), result, params, stop, notes, canvas, max_tokens)

    return run()


def _to_chunk(model: Model, n_prompt: int, result, params: DiffusionParams, stop: Sequence[str],
              notes: list[str], canvas: int, max_tokens: int) -> Chunk:
    """The Completion: the answer is capped at max_tokens even when the canvas was rounded up."""
    after_prompt = result.tokens[n_prompt:]
    tokens, hit_eog = answer_tokens(model, after_prompt)
    if len(tokens) > max_tokens:
        tokens, hit_eog = tokens[:max_tokens], False
    text = model.detokenize(tokens, remove_special=False, unparse_special=False)
    finish = "stop" if hit_eog else "length"
    cut = find_stop(text, stop)
    if cut is not None:
        text, finish = text[:cut], "stop"
    if result.cancelled:
        finish = "cancelled"
    timings = Timings(generation_seconds=result.decode_seconds + result.sampling_seconds + result.guidance_seconds,
                      decode_seconds=result.decode_seconds, sampling_seconds=result.sampling_seconds,
                      guidance_seconds=result.guidance_seconds, steps=result.steps_run,
                      forwards=result.forwards)
    effective = {k: (v.name if isinstance(v, IntEnum) else v) for k, v in asdict(params).items()}
    effective.update(canvas_length=canvas, max_tokens=min(max_tokens, canvas - n_prompt), stop=list(stop),
                     shift_logits=model.shift_logits, mask_token_id=model.mask_token)
    completion = Completion(
        text=text, tokens=tokens, prompt_tokens=n_prompt, finish_reason=finish, kind="diffusion",
        timings=timings, params=effective,
        canvas_text=model.detokenize(after_prompt.tolist(), remove_special=False, unparse_special=False),
        notes=notes)
    return Chunk(text, tokens, finish, completion)
