"""generate(): one call for both kinds of model, one-shot or streamed.

The model decides how text is made: ``model.is_diffusion`` routes to the diffusion loop
(``hoshikage.sampling``), everything else to llama.cpp's autoregressive sampler chain.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np

from ..chat_format import Grammar, has_tool_history, json_schema_grammar
from ..chat_template import ChatMessage
from ..context import Context
from ..errors import ParameterError
from ..model import Model
from ..sampling.params import DiffusionParams
from ..text_limits import check_prompt_text
from .autoregressive import stream_autoregressive
from .logprobs import MAX_TOP_LOGPROBS
from .params import SamplingParams, check_number
from .structured import PreparedChat, StructuredChat, prepare_chat, with_tool_calls
from .types import Chunk, Completion, Timings

__all__ = ["generate", "prepare_prompt", "Completion", "Chunk", "Timings", "SamplingParams", "StructuredChat",
           "DiffusionParams", "StepCallback"]

# (step, total_steps, canvas int32 [canvas]) -> False to cancel
StepCallback = Callable[[int, int, np.ndarray], "bool | None"]


def prepare_prompt(model: Model, prompt: str | None = None,
                   messages: Sequence[ChatMessage | dict] | None = None,
                   chat_template: bool = False, *, deadline: float | None = None,
                   should_stop: Callable[[], bool] | None = None, n_ctx: int | None = None) -> list[int]:
    """Prompt tokens as the model will see them.

    ``messages`` (or ``prompt`` with ``chat_template=True``) go through the model's chat
    template, rendered within its bounds (``deadline``, ``should_stop``: see
    ``Model.apply_chat_template``); the result is tokenized with special tokens parsed, as
    llama.cpp's tools do. Before that, text too long for a context of ``n_ctx`` tokens
    (default: the training length), or with too long a run of one character class, is refused
    (ParameterError naming messages or prompt; see hoshikage.text_limits).
    """
    if (prompt is None) == (messages is None):
        raise ParameterError("give exactly one of prompt= or messages=", "prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ParameterError(f"prompt must be a string, got {type(prompt).__name__}", "prompt")
    if messages is None and chat_template:
        messages = [{"role": "user", "content": prompt}]
    text = (model.apply_chat_template(messages, deadline=deadline, should_stop=should_stop)
            if messages is not None else prompt)
    check_prompt_text(text, n_ctx or model.n_ctx_train or 4096, "prompt" if prompt is not None else "messages")
    tokens = model.tokenize(text, add_special=True, parse_special=True)
    if not tokens:
        raise ParameterError("the prompt is empty (no tokens after tokenization)",
                             "prompt" if prompt is not None else "messages")
    return tokens


def _check_prompt_tokens(model: Model, tokens: Sequence[int], prompt: str | None,
                         messages: Sequence[ChatMessage | dict] | None) -> list[int]:
    """Prepared prompt tokens: a non-empty list of ids within the vocabulary, given alone."""
    if prompt is not None or messages is not None:
        raise ParameterError("give prompt_tokens= alone, without prompt= or messages=", "prompt_tokens")
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, Sequence):
        raise ParameterError("prompt_tokens must be a list of token ids", "prompt_tokens")
    out, n_vocab = [], model.n_vocab
    for i, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < n_vocab:
            raise ParameterError(f"prompt_tokens[{i}] = {t!r} is not a token id in [0, {n_vocab})", "prompt_tokens")
        out.append(int(t))
    if not out:
        raise ParameterError("prompt_tokens must not be empty", "prompt_tokens")
    return out


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def generate(model: Model, prompt: str | None = None, *, messages: Sequence[ChatMessage | dict] | None = None,
             chat_template: bool = False, max_tokens: int = 256, stop: Sequence[str] = (),
             temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
             min_p: float | None = None, repeat_penalty: float | None = None, repeat_last_n: int | None = None,
             presence_penalty: float | None = None, frequency_penalty: float | None = None,
             seed: int | None = None, diffusion: DiffusionParams | dict | None = None,
             adjust: bool = True, stream: bool = False, context: Context | None = None,
             n_ctx: int | None = None, n_threads: int | None = None, on_step: StepCallback | None = None,
             should_stop: Callable[[], bool] | None = None, prompt_tokens: Sequence[int] | None = None,
             grammar: Grammar | None = None, tools: Sequence[dict] | None = None,
             tool_choice: str | dict = "auto", json_schema: dict | None = None,
             parallel_tool_calls: bool | None = None, logprobs: int | None = None) -> Completion | Iterator[Chunk]:
    """Generate text from ``prompt`` (raw text), ``messages`` (chat) or ``prompt_tokens``
    (already prepared by :func:`prepare_prompt`, so that a caller that needed the count first
    renders the chat template once).

    Shared parameters (None = the default for the model's kind): temperature, top_k, top_p,
    seed, and for autoregressive models also min_p and the penalties; ``stop`` strings end
    the answer. ``max_tokens`` is the answer length for autoregressive models and the
    masked part of the canvas for diffusion models (canvas = prompt + max_tokens).

    Diffusion models take ``diffusion`` (DiffusionParams or a dict of its fields: steps,
    algorithm, schedule, eps, block_length, alg_temp, cfg_scale, add_gumbel_noise,
    corrected, threshold, factor, early_stop -- on by default: the loop stops once the answer
    is decided; ``Completion.timings.forwards`` says how many model passes it took). With
    ``adjust`` true, values breaking the block schedule's divisibility rules are rounded up
    and reported in ``Completion.notes``; otherwise ValueError.
    ``on_step(step, total, canvas)`` reports progress (return False to cancel);
    ``should_stop()`` is polled before each token or step.

    Autoregressive models only: ``json_schema`` makes the answer JSON valid for that schema
    (grammar-constrained); ``tools`` (OpenAI tool definitions, with ``tool_choice`` "auto",
    "none", "required" or ``{"type": "function", "function": {"name": ...}}``) lets the model
    call functions in its family's format, parsed into ``Completion.tool_calls`` (see
    ``generation.structured``). ``grammar`` is a raw GBNF constraint (``hoshikage.chat_format``).
    ``logprobs`` (None = off, else 0-20 alternatives) reports each token's log probability.

    ``stream=True`` returns an iterator of Chunk (text deltas; a diffusion model yields its
    answer as one chunk); otherwise the Completion. ``context`` reuses a Context (it must be
    large enough); otherwise one is made and freed for this call.
    """
    check_number("max_tokens", max_tokens, lo=1, integer=True)
    limit = context.n_ctx if context is not None else n_ctx
    spec = StructuredChat(tools or (), tool_choice, json_schema, parallel_tool_calls)
    prompt_tokens, stop, grammar, prepared = _prepare_input(model, prompt, messages, chat_template, prompt_tokens,
                                                            stop, grammar, spec, limit)
    shared = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    run = {"context": context, "n_ctx": n_ctx, "n_threads": n_threads, "should_stop": should_stop}
    if model.is_diffusion:
        _refuse_for_diffusion(logprobs, grammar, json_schema)
        chunks = _diffusion(model, prompt_tokens, max_tokens, stop, _diffusion_params(diffusion, shared),
                            {**run, "adjust": adjust, "on_step": on_step})
    else:
        extra = {"min_p": min_p, "repeat_penalty": repeat_penalty, "repeat_last_n": repeat_last_n,
                 "presence_penalty": presence_penalty, "frequency_penalty": frequency_penalty}
        chunks = _autoregressive(model, prompt_tokens, max_tokens, stop, {**shared, **extra}, diffusion, grammar,
                                 {**run, "logprobs": logprobs})
    if prepared is not None and prepared.chat_plan is not None:
        chunks = _parse_tool_calls(chunks, prepared)
    return chunks if stream else _collect(chunks)


def _prepare_input(model: Model, prompt: str | None, messages: Sequence[ChatMessage | dict] | None,
                   chat_template: bool, prompt_tokens: Sequence[int] | None, stop: str | Sequence[str],
                   grammar: Grammar | None, spec: StructuredChat,
                   limit: int | None) -> tuple[list[int], Sequence[str], Grammar | None, PreparedChat | None]:
    """(prompt tokens, stop strings, grammar, the structured chat or None): the prompt prepared once."""
    stop = [stop] if isinstance(stop, str) else stop
    prepared, grammar = _structured(model, messages, prompt_tokens, spec, grammar, limit)
    if prepared is not None:
        prompt_tokens, messages, stop = prepared.prompt_tokens, None, [*stop, *prepared.stops]
    tokens = (prepare_prompt(model, prompt, messages, chat_template, n_ctx=limit) if prompt_tokens is None
              else _check_prompt_tokens(model, prompt_tokens, prompt, messages))
    return tokens, stop, grammar, prepared


def _diffusion(model: Model, prompt_tokens: list[int], max_tokens: int, stop: Sequence[str],
               params: DiffusionParams, run: dict[str, Any]) -> Iterator[Chunk]:
    from .diffusion import stream_diffusion  # imports the numpy sampler only when needed

    return stream_diffusion(model, prompt_tokens, max_tokens=max_tokens, params=params, stop=stop, **run)


def _refuse_for_diffusion(logprobs: int | None, grammar: Grammar | None, json_schema: dict | None) -> None:
    """ParameterError for what only an autoregressive model can do: logprobs, a grammar."""
    if logprobs is not None:
        raise ParameterError("log probabilities need an autoregressive model: a diffusion model has no "
                             "per-token distribution in generation order", "logprobs")
    if grammar is not None:
        raise ParameterError("grammar-constrained output needs an autoregressive model: a diffusion model "
                             "decides every position of its canvas in parallel, which a left-to-right "
                             "grammar cannot constrain", "grammar" if json_schema is None else "response_format")


def _autoregressive(model: Model, prompt_tokens: list[int], max_tokens: int, stop: Sequence[str],
                    sampling: dict[str, Any], diffusion: Any, grammar: Grammar | None,
                    run: dict[str, Any]) -> Iterator[Chunk]:
    if diffusion:
        raise ParameterError(f"diffusion parameters were given, but {model.path.name} is an autoregressive "
                             "model", "diffusion")
    params = SamplingParams(**{k: v for k, v in sampling.items() if v is not None}).with_seed()
    logprobs = run["logprobs"]
    if logprobs is not None:
        check_number("logprobs", logprobs, lo=0, hi=MAX_TOP_LOGPROBS, integer=True)
    return _stream_ar(model, prompt_tokens, max_tokens, params, stop, run["context"], run["n_ctx"],
                      run["n_threads"], run["should_stop"], grammar, logprobs)


def _structured(model: Model, messages: Sequence[ChatMessage | dict] | None, prompt_tokens: Sequence[int] | None,
                spec: StructuredChat, grammar: Grammar | None,
                limit: int | None) -> tuple[PreparedChat | None, Grammar | None]:
    """(the chat prepared with tools / a schema, or None; the grammar to sample with)."""
    if prompt_tokens is None and messages is not None and (spec.asked() or has_tool_history(messages)):
        if grammar is not None:
            raise ParameterError("give grammar= or tools= / json_schema=, not both", "grammar")
        prepared = prepare_chat(model, messages, spec, n_ctx=limit,
                                render=lambda m: prepare_prompt(model, messages=m, n_ctx=limit))
        return prepared, prepared.grammar
    if spec.asked() == "tools":
        raise ParameterError("tools need messages= (a chat)", "tools")
    if spec.json_schema is not None:
        if grammar is not None:
            raise ParameterError("give grammar= or json_schema=, not both", "grammar")
        return None, json_schema_grammar(spec.json_schema)
    return None, grammar


def _parse_tool_calls(chunks: Iterator[Chunk], prepared: PreparedChat) -> Iterator[Chunk]:
    """The stream unchanged, except that the final Completion carries the parsed tool calls."""
    for chunk in chunks:
        if chunk.completion is not None:
            chunk = replace(chunk, completion=with_tool_calls(chunk.completion, prepared))
        yield chunk


def _diffusion_params(diffusion: DiffusionParams | dict | None, shared: dict[str, Any]) -> DiffusionParams:
    if diffusion is None:
        base = DiffusionParams()
    elif isinstance(diffusion, DiffusionParams):
        base = diffusion
    elif isinstance(diffusion, dict):
        known = {f.name for f in fields(DiffusionParams)}
        unknown = sorted(set(diffusion) - known)
        if unknown:
            raise ParameterError(f"unknown diffusion parameter(s): {', '.join(unknown)}", "diffusion")
        base = DiffusionParams(**diffusion)
    else:
        raise ParameterError(f"diffusion must be DiffusionParams or a dict, got {type(diffusion).__name__}",
                             "diffusion")
    return replace(base, **{k: v for k, v in shared.items() if v is not None})


def _stream_ar(model: Model, prompt_tokens: list[int], max_tokens: int, sampling: SamplingParams,
               stop: Sequence[str], context: Context | None, n_ctx: int | None, n_threads: int | None,
               should_stop: Callable[[], bool] | None, grammar: Grammar | None = None,
               logprobs: int | None = None) -> Iterator[Chunk]:
    need = len(prompt_tokens) + max_tokens
    limit = context.n_ctx if context is not None else (n_ctx or model.n_ctx_train)
    if len(prompt_tokens) >= limit:
        raise ParameterError(f"the prompt has {len(prompt_tokens)} tokens, which does not fit the context "
                             f"of {limit} tokens", "prompt")
    max_tokens = min(max_tokens, limit - len(prompt_tokens))

    def run() -> Iterator[Chunk]:  # the context is made on first use, freed when done
        ctx = context or Context(model, n_ctx=min(limit, _round_up(need, 256)), n_threads=n_threads)
        try:
            yield from stream_autoregressive(model, ctx, prompt_tokens, max_tokens=max_tokens, sampling=sampling,
                                             stop=stop, should_stop=should_stop, grammar=grammar,
                                             logprobs=logprobs)
        finally:
            if context is None:
                ctx.close()

    return run()


def _collect(chunks: Iterator[Chunk]) -> Completion:
    for chunk in chunks:
        if chunk.completion is not None:
            return chunk.completion
    raise RuntimeError("generation ended without a completion")  # a bug, not a user error
