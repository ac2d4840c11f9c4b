"""From a validated request to a Completion, on the worker thread.

``make_plan`` (request side) merges the defaults: settings < the model's registry entry <
the request. ``Runner.run`` (worker side) loads the model, decides by its kind how to
generate, checks a diffusion request's memory estimate against the budget, picks a context
from the residency's buckets, runs ``hoshikage.generate`` with the job's cancellation and
deadline, and reports events back to the handler. It also writes the per-request log line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import Algorithm, Schedule, generate, prepare_prompt
from ..generation.diffusion import plan_canvas
from ..generation.settled import SettledText
from ..generation.structured import PreparedChat, StructuredChat, prepare_chat, with_tool_calls
from ..generation.tool_stream import ToolCallStream
from ..chat_template import RENDER_TIMEOUT_S, RenderStopped, TemplateBoundError
from ..errors import ContextError, HoshikageError
from ..sampling.params import DIFFUSION_PARAMS, SHARED_PARAMS, DiffusionParams
from .errors import APIError, from_value_error
from .device_budget import check_device_memory
from .memory import bucket, estimate_diffusion
from .param_fields import merged
from .registry import ModelEntry
from .schemas import ChatCompletionRequest, CompletionRequest
from .settings import Settings
from .job_runner import JobRunner, deadline_stop
from .worker import Job


_AUTOREGRESSIVE_ONLY = tuple(p.name for p in SHARED_PARAMS if p.autoregressive_only)


@dataclass
class Plan:
    """Everything a generation needs, with defaults already merged."""

    endpoint: str  # "chat" or "completions"
    entry: ModelEntry
    messages: list[dict[str, str]] | None
    prompt: str | None
    max_tokens: int
    stop: list[str]
    sampling: dict[str, Any]
    diffusion: dict[str, Any]
    stream: bool
    stream_blocks: bool = False
    include_usage: bool = False
    structured: StructuredChat | None = None  # tools / response_format (chat only)
    logprobs: int | None = None  # alternatives per token to report, None = off
    info: dict[str, Any] = field(default_factory=dict)  # filled by the runner: kind, timeout, ...


def make_plan(req: ChatCompletionRequest | CompletionRequest, entry: ModelEntry, settings: Settings) -> Plan:
    refused = req.unsupported()
    if refused is not None:  # an OpenAI field Hoshikage does not implement is refused, never dropped
        raise APIError("validation_error", f"{refused[0]}: {refused[1]}", param=refused[0], status=400)
    # settings < the model's registry entry < the request, by the declared names (sampling/params.py)
    sampling = merged(SHARED_PARAMS, settings, req.sampling_overrides())
    diffusion = merged(DIFFUSION_PARAMS, settings, entry.diffusion, req.diffusion_overrides())
    stop = list(dict.fromkeys([*settings.default_stop, *entry.stop, *(req.stop or [])]))
    max_tokens = req.requested_max_tokens() or entry.max_tokens or settings.max_tokens
    chat = isinstance(req, ChatCompletionRequest)
    structured = structured_chat(req) if chat else None
    messages = None
    if chat:
        messages = req.openai_messages() if structured is not None else req.as_messages()
    return Plan(endpoint="chat" if chat else "completions", entry=entry, structured=structured,
                logprobs=req.requested_logprobs(),
                messages=messages, prompt=None if chat else req.prompt,
                max_tokens=max_tokens, stop=stop, sampling=sampling, diffusion=diffusion, stream=req.stream,
                stream_blocks=bool(req.diffusion_stream_blocks),
                include_usage=bool(req.stream_options and req.stream_options.include_usage))


def structured_chat(req: ChatCompletionRequest) -> StructuredChat | None:
    """The request's tools / response_format for the generation layer; None for plain chat (a
    history with tool calls or results counts too: only llama.cpp's chat handling renders it)."""
    schema = req.response_format.schema_or_none() if req.response_format is not None else None
    forced = req.tool_choice not in (None, "auto", "none")  # needs tools: refused below without them
    if not req.tools and schema is None and not forced and not req.uses_tool_history():
        return None
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    return StructuredChat(tools=[t.model_dump(exclude_none=True) for t in req.tools or []],
                          tool_choice=choice if isinstance(choice, str) else choice.model_dump(),
                          json_schema=schema, parallel_tool_calls=req.parallel_tool_calls)


class Runner(JobRunner):
    """Runs one generation Job on the worker thread (``Worker(run=Runner(...).run)``)."""

    what = "generation"

    def execute(self, job: Job, model: Any, kind: str) -> Any:
        if model.is_diffusion and model.mask_token is None:
            raise APIError("model_load_failed", f"{job.plan.entry.name}: {model.path.name} is a diffusion model "
                           "without a valid mask token (tokenizer.ggml.mask_token_id)", param="model")
        return self._generate(job, job.plan, model, kind)

    def summary(self, completion: Any, elapsed: float) -> str:
        gen_s = completion.timings.generation_seconds
        rate = completion.completion_tokens / gen_s if gen_s > 0 else 0.0
        return (f"prompt_tokens={completion.prompt_tokens} completion_tokens={completion.completion_tokens} "
                f"steps={completion.timings.steps} time={elapsed:.2f}s tokens/s={rate:.1f} "
                f"finish={completion.finish_reason}")

    def _prompt(self, job: Job, plan: Plan, model: Any, limit: int) -> PreparedChat | None:
        """The prompt tokens (and, with tools or a response format, the grammar and the parser),
        prepared once; None if the job was cancelled meanwhile."""
        def render(messages: Any = None) -> list[int]:  # the bounded renderer (chat_template.py)
            args = {"prompt": plan.prompt, "messages": messages if messages is not None else plan.messages}
            return prepare_prompt(model, **args, n_ctx=limit, should_stop=job.cancelled.is_set,
                                  deadline=time.monotonic() + min(RENDER_TIMEOUT_S, self.settings.request_timeout))

        try:
            if plan.structured is not None:
                return prepare_chat(model, plan.messages, plan.structured, n_ctx=limit, render=render)
            return PreparedChat(render())
        except RenderStopped:
            if job.cancel_reason == "shutdown":
                raise APIError("shutting_down", "the server is shutting down") from None
            return None
        except TemplateBoundError as exc:
            raise APIError("validation_error", f"the chat template of {plan.entry.name} cannot render these "
                           f"messages: {exc}", param="messages", status=400) from exc
        except ValueError as exc:  # anything else refused here is about the prompt
            raise from_value_error(exc, "messages" if plan.messages is not None else "prompt") from exc

    def _generate(self, job: Job, plan: Plan, model: Any, kind: str):
        limit = self.residency.max_tokens_in_context()
        prepared = self._prompt(job, plan, model, limit)
        if prepared is None:
            return None
        prompt_tokens = prepared.prompt_tokens
        n_prompt = len(prompt_tokens)
        if n_prompt >= limit:
            raise APIError("validation_error", f"the prompt has {n_prompt} tokens, which leaves no room in "
                           f"the context of {limit} tokens (N_CTX / the model's training length)",
                           param="messages" if plan.messages is not None else "prompt", status=400)
        timeout = self.settings.request_timeout
        kwargs: dict[str, Any] = dict(plan.sampling)
        on_step = None
        if kind == "diffusion":
            for key in _AUTOREGRESSIVE_ONLY:
                kwargs.pop(key, None)  # autoregressive-only fields do not apply
            kwargs["diffusion"] = {**plan.diffusion, "algorithm": Algorithm(plan.diffusion["algorithm"]),
                                   "schedule": Schedule(plan.diffusion["schedule"])}
            tokens, block = _diffusion_canvas(n_prompt, plan, limit)
            self._check_memory(model, n_prompt, tokens, bucket(tokens, limit), block, plan)
            timeout = self._diffusion_timeout(plan.diffusion["steps"], limit)
            on_step = self._on_step(job, plan, model, n_prompt)
        else:
            check_look_back(plan.sampling["repeat_last_n"], limit)
            tokens = min(n_prompt + plan.max_tokens, limit)
        try:
            context = self.residency.context(kind, tokens)
        except (ContextError, ValueError) as exc:
            raise APIError("inference_failed", f"could not create a context of {tokens} tokens: {exc}") from exc
        if not self.settings.prompt_cache:
            context.clear_memory()  # PROMPT_CACHE off: nothing of an earlier request is reused
        should_stop = deadline_stop(job, timeout)

        try:
            chunks = generate(model, prompt_tokens=prompt_tokens, max_tokens=plan.max_tokens, stream=True,
                              stop=[*plan.stop, *prepared.stops], grammar=prepared.grammar, logprobs=plan.logprobs,
                              context=context, on_step=on_step, should_stop=should_stop, **kwargs)
        except ValueError as exc:
            raise from_value_error(exc) from exc
        plan.info.update(kind=kind, timeout_s=timeout, prompt_tokens=n_prompt)
        job.emit("ready", {"kind": kind, "timeout_s": timeout, "prompt_tokens": n_prompt})
        completion = self._run_chunks(job, chunks, kind, prepared, plan)
        if completion.finish_reason == "cancelled":
            done = completion.timings.steps if kind == "diffusion" else completion.completion_tokens
            unit = "steps" if kind == "diffusion" else "tokens"
            if job.cancel_reason == "timeout":
                raise APIError("processing_timeout", f"generation took longer than {timeout:.1f}s "
                               f"(REQUEST_TIMEOUT{', scaled by the steps' if kind == 'diffusion' else ''}) "
                               f"and was stopped after {done} {unit}")
            if job.cancel_reason == "shutdown":
                raise APIError("shutting_down", f"the server is shutting down; generation stopped after "
                               f"{done} {unit}")
            return None
        return completion

    @staticmethod
    def _run_chunks(job: Job, chunks: Any, kind: str, prepared: PreparedChat, plan: Plan) -> Any:
        """Drive the generation, emitting text deltas (with their tokens' log probabilities when
        asked for; with tools, tool-call deltas) as they come; the completion, with its tool calls
        parsed out."""
        tool_stream = ToolCallStream(prepared.chat_plan) if plan.stream and prepared.chat_plan else None
        completion, pending = None, []
        try:
            for chunk in chunks:
                pending.extend(chunk.logprobs)
                if chunk.text and kind == "autoregressive":
                    if tool_stream is not None:
                        _emit_tool_deltas(job, *tool_stream.push(chunk.text))
                    elif plan.logprobs is not None:
                        job.emit("delta_logprobs", (chunk.text, pending))
                        pending = []
                    else:
                        job.emit("delta", chunk.text)
                if chunk.completion is not None:
                    completion = chunk.completion
        except (HoshikageError, ValueError) as exc:
            raise APIError("inference_failed", f"generation failed: {exc}") from exc
        if completion is None:
            raise APIError("inference_failed", "generation ended without a result")
        if completion.finish_reason == "cancelled":
            return completion
        completion = with_tool_calls(completion, prepared)
        if tool_stream is not None:
            completion, content, deltas = tool_stream.finish(completion)
            _emit_tool_deltas(job, content, deltas)
        return completion

    def _diffusion_timeout(self, steps: int, limit: int) -> float:
        """The request's timeout: REQUEST_TIMEOUT scaled by its steps, at most DIFFUSION_TIMEOUT_CAP;
        400 naming diffusion_steps above MAX_DIFFUSION_STEPS or the context's positions."""
        s = self.settings
        if steps > limit:  # more steps than any canvas has positions: only time would be spent
            raise APIError("validation_error", f"diffusion_steps={steps} is more than the {limit} positions a "
                           f"canvas can have (N_CTX / the model's training length); use at most {limit}",
                           param="diffusion_steps", status=400)
        if steps > s.max_diffusion_steps:
            raise APIError("validation_error", f"diffusion_steps={steps} is more than MAX_DIFFUSION_STEPS="
                           f"{s.max_diffusion_steps} (each step is a forward pass over the whole canvas); use "
                           f"at most {s.max_diffusion_steps}", param="diffusion_steps", status=400)
        scaled = s.request_timeout * max(1.0, steps / s.diffusion_steps)
        return max(s.request_timeout, min(scaled, s.diffusion_timeout_cap))

    def _check_memory(self, model: Any, n_prompt: int, canvas: int, n_ubatch: int, block: int | None,
                      plan: Plan) -> None:
        arch = model.arch
        n_head = _meta_int(model, f"{arch}.attention.head_count", 32)
        n_ff = _meta_int(model, f"{arch}.feed_forward_length", 4 * model.n_embd)
        kv_cache = None
        if plan.diffusion.get("cache") == "prefix":  # the twin's KV cache (generation/prefix_cache.py)
            kv_cache = (_meta_int(model, f"{arch}.block_count", 32),
                        _meta_int(model, f"{arch}.attention.head_count_kv", n_head), model.n_embd // n_head)
        est = estimate_diffusion(canvas=canvas, n_ubatch=n_ubatch, n_prompt=n_prompt, n_vocab=model.n_vocab,
                                 n_embd=model.n_embd, n_head=n_head, n_ff=n_ff, block_length=block,
                                 cfg=plan.diffusion.get("cfg_scale", 0) > 0, kv_cache=kv_cache)
        plan.info["memory_estimate_mb"] = round(est.total_mb, 1)
        n_layer, limit = _meta_int(model, f"{arch}.block_count", 32), self.settings.device_memory_limit_mb
        host_mb = check_device_memory(model, est, n_ubatch=n_ubatch, canvas=canvas, limit_mb=limit, n_layer=n_layer)
        budget = self.settings.diffusion_memory_budget_mb
        if host_mb > budget:
            raise APIError("memory_budget_exceeded",
                           f"this diffusion request needs an estimated {est.describe()} for a canvas of "
                           f"{canvas} tokens ({n_prompt} prompt + {canvas - n_prompt} to generate), above "
                           f"DIFFUSION_MEMORY_BUDGET_MB={budget}; lower max_tokens"
                           + (" or diffusion_cfg_scale" if plan.diffusion.get("cfg_scale", 0) > 0 else ""),
                           param="max_tokens")

    def _on_step(self, job: Job, plan: Plan, model: Any, n_prompt: int):
        settled = (SettledText(model, n_prompt, plan.stop, plan.max_tokens)
                   if plan.stream_blocks and plan.stream else None)

        def on_step(step: int, total: int, canvas: np.ndarray) -> bool:
            job.emit("progress", (step + 1, total))  # called as step ``step`` (0-based) starts
            if settled is not None:
                delta = settled.update(canvas)
                if delta:
                    job.emit("delta", delta)
            return True

        return on_step


def _emit_tool_deltas(job: Job, content: str, deltas: list[dict[str, Any]]) -> None:
    if content:
        job.emit("delta", content)
    if deltas:
        job.emit("tool_delta", deltas)


def _diffusion_canvas(n_prompt: int, plan: Plan, limit: int) -> tuple[int, int | None]:
    """The canvas the generation will use (generation.diffusion.plan_canvas: cut to the context,
    rounded for the block schedule), and the block length if the block schedule is used."""
    params = DiffusionParams(**plan.diffusion)
    try:
        canvas, _, _ = plan_canvas(n_prompt, plan.max_tokens, params, limit=limit, adjust=True)
    except ValueError as exc:
        raise from_value_error(exc) from exc
    return canvas, params.block_length if params.schedule == Schedule.BLOCK_BASED else None


def check_look_back(repeat_last_n: int, limit: int) -> None:
    """400 naming repeat_last_n when it looks back further than any context can hold (-1: all of it)."""
    if repeat_last_n > limit:
        raise APIError("validation_error", f"repeat_last_n={repeat_last_n} looks back further than the context of "
                       f"{limit} tokens (N_CTX / the model's training length) holds; use at most {limit}, or -1 "
                       "for the whole context", param="repeat_last_n", status=400)


def _meta_int(model: Any, key: str, default: int) -> int:
    try:
        value = model.meta(key)
        return int(value) if value is not None else default
    except (ValueError, TypeError):
        return default
