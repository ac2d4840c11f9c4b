"""From a planned request to its HTTP answer: queue the job, wait for it, then collect or stream.

A generation request is planned (defaults merged), queued as a Job, and answered once the
worker reports back: errors found before generation starts (unknown model, load failure,
bad parameters, memory budget, queue full or too long a wait) get their own HTTP status,
even for ``stream=true``, because the response starts only when the job is ready. While a
handler waits it checks its client every ``POLL_S``; a client that went away withdraws its job.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from .embed import EmbeddingRequest, make_embedding_plan
from .errors import APIError
from .execute import Plan, make_plan
from .openai_format import SSE_DONE, Formatter, extension, finish, sse, sse_comment
from .schemas import ChatCompletionRequest, CompletionRequest
from .worker import Job

if TYPE_CHECKING:
    from .app import ServerState

log = logging.getLogger("hoshikage.server")

POLL_S = 0.25  # how often a waiting handler checks its client and the queue deadline
KEEPALIVE_S = 10.0  # an SSE comment after this long without events


def not_found(name: str, state: ServerState) -> APIError:
    """model_not_found naming the models that are registered."""
    names = ", ".join(sorted(state.registry.entries())) or "none (see hoshikage add)"
    return APIError("model_not_found", f"model {name!r} is not registered; available: {names}", param="model")


async def generate(state: ServerState, body: ChatCompletionRequest | CompletionRequest, request: Request):
    """A chat or completion request: JSON once done, or an SSE stream once the job is ready."""
    entry = state.registry.get(body.model)
    if entry is None:
        raise not_found(body.model, state)
    plan = make_plan(body, entry, state.settings)
    job = Job(plan, asyncio.get_running_loop())
    _, gone = await _queue_and_wait(state, job, request)
    if gone is not None:
        return gone
    fmt = Formatter(plan.endpoint, entry.name)
    if plan.stream:
        return StreamingResponse(_stream(state, job, fmt, plan), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await _collect(state, job, fmt, plan, request)


async def embed(state: ServerState, body: EmbeddingRequest, request: Request):
    """An embeddings request: the job emits only "done" (the response body) or "error"."""
    entry = state.registry.get(body.model)
    if entry is None:
        raise not_found(body.model, state)
    job = Job(make_embedding_plan(body, entry, state.settings), asyncio.get_running_loop())
    data, gone = await _queue_and_wait(state, job, request)
    return gone if gone is not None else JSONResponse(data)


async def _queue_and_wait(state: ServerState, job: Job, request: Request) -> tuple[Any, JSONResponse | None]:
    """Submit ``job`` and wait for its first event: (its data, None) when the job is ready, (None,
    a 499 response) when the client went away; an error event is raised (its APIError)."""
    state.worker.submit(job)  # APIError server_busy / shutting_down
    try:
        kind, data = await _first_event(state, job, request)
    except BaseException:
        state.worker.withdraw(job, "disconnect")
        raise
    if kind == "error":
        raise data
    if kind is None:  # the client went away while waiting
        return None, JSONResponse({}, status_code=499)
    return data, None


async def _first_event(state: ServerState, job: Job, request: Request) -> tuple[str | None, Any]:
    """Wait for the job to become ready (or fail), enforcing QUEUE_TIMEOUT and watching the client."""
    queue_deadline = time.monotonic() + state.settings.queue_timeout
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            pass
        if await request.is_disconnected():
            state.worker.withdraw(job, "disconnect")
            return None, None
        if not job.started.is_set() and time.monotonic() > queue_deadline:
            if state.worker.withdraw(job, "queue_timeout", cancel_running=False):
                raise APIError("queue_timeout", f"the request waited {state.settings.queue_timeout:g}s for its "
                               "turn (QUEUE_TIMEOUT) behind other generations; try again later")


async def _collect(state: ServerState, job: Job, fmt: Formatter, plan: Plan, request: Request):
    """Wait for the result, checking every POLL_S that the client is still there (events such as
    diffusion progress may arrive much more often than that)."""
    next_check = time.monotonic() + POLL_S
    while True:
        try:
            kind, data = await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            kind, data = None, None
        if kind == "error":
            raise data
        if kind == "done":
            return JSONResponse(fmt.response(data, _extra(plan)))
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + POLL_S
            if await request.is_disconnected():
                job.cancel("disconnect")
                return JSONResponse({}, status_code=499)


def _extra(plan: Plan) -> dict[str, Any]:
    out = {"model_entry": plan.entry.name}
    if plan.entry.test_model:
        out["test_model"] = True
    for key in ("memory_estimate_mb", "timeout_s"):
        if key in plan.info:
            out[key] = plan.info[key]
    return out


async def _stream(state: ServerState, job: Job, fmt: Formatter, plan: Plan) -> AsyncIterator[str]:
    """SSE: AR token deltas; diffusion progress comments, then one content chunk; then [DONE]."""
    sent = ""
    lp_sent = 0  # log probabilities already streamed
    role_sent = False
    finished = False
    try:
        while True:
            try:
                kind, data = await asyncio.wait_for(job.events.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield sse_comment("keepalive")
                continue
            if kind == "progress":
                yield sse_comment(f"diffusion step {data[0]}/{data[1]}")
            elif kind == "delta":
                yield sse(fmt.chunk(data, role=not role_sent))
                role_sent, sent = True, sent + data
            elif kind == "delta_logprobs":  # text with its tokens' log probabilities
                text, lps = data
                yield sse(fmt.chunk(text, role=not role_sent, logprobs=lps))
                role_sent, sent, lp_sent = True, sent + text, lp_sent + len(lps)
            elif kind == "tool_delta":  # pieces of tool calls (OpenAI's delta.tool_calls)
                yield sse(fmt.chunk(None, role=not role_sent, tool_calls=data))
                role_sent = True
            elif kind == "error":
                finished = True
                yield sse(data.body())
                yield SSE_DONE
                return
            elif kind == "done":
                finished = True
                text = data.text
                rest = text[len(sent):] if text.startswith(sent) else ""
                if not text.startswith(sent):
                    log.warning("streamed text is not a prefix of the final answer (job %d)", job.id)
                # Diffusion pseudo-streaming: the whole answer is this one chunk.
                rest_lps = data.logprobs[lp_sent:] if data.logprobs is not None else None
                yield sse(fmt.chunk(rest, role=not role_sent, finish_reason=finish(data), logprobs=rest_lps,
                                    extra=extension(data, _extra(plan))))
                if plan.include_usage:
                    yield sse(fmt.usage_chunk(data))
                yield SSE_DONE
                return
    finally:
        if not finished:  # the client disconnected (or the server is stopping): stop the work
            state.worker.withdraw(job, "disconnect")

