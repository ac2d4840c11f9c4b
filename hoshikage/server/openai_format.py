"""OpenAI response objects and Server-Sent Events, for chat and for (text) completions.

Besides OpenAI's fields, responses carry ``hoshikage``: the model's kind, the effective
parameters after defaults and adjustments (e.g. steps rounded up for the block schedule),
the notes describing each adjustment, and timings. OpenAI clients ignore unknown fields.
"""
from __future__ import annotations

import json
import time
import uuid
from enum import IntEnum
from typing import Any

from ..generation.types import Completion


class Formatter:
    """Builds the objects of one response (one id, one creation time)."""

    def __init__(self, endpoint: str, model: str):
        self.chat = endpoint == "chat"
        self.model = model
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self._offset = 0  # completions' text_offset: characters of the answer reported so far

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": "hoshikage"}

    def response(self, completion: Completion, extra: dict[str, Any]) -> dict[str, Any]:
        """The non-streamed response."""
        if self.chat:
            out = self._base("chat.completion")
            message: dict[str, Any] = {"role": "assistant", "content": completion.text}
            if completion.tool_calls:
                message["content"] = completion.text or None
                message["tool_calls"] = [tool_call_json(c) for c in completion.tool_calls]
            out["choices"] = [{"index": 0, "message": message, "logprobs": self.logprobs(completion.logprobs),
                               "finish_reason": finish(completion)}]
        else:
            out = self._base("text_completion")
            out["choices"] = [{"index": 0, "text": completion.text, "logprobs": self.logprobs(completion.logprobs),
                               "finish_reason": finish(completion)}]
        out["usage"] = usage(completion)
        out["hoshikage"] = extension(completion, extra)
        return out

    def chunk(self, text: str | None, *, role: bool = False, finish_reason: str | None = None,
              extra: dict[str, Any] | None = None, tool_calls: list[dict[str, Any]] | None = None,
              logprobs: list[Any] | None = None) -> dict[str, Any]:
        """One streamed chunk; ``tool_calls``: OpenAI's ``delta.tool_calls`` pieces (with ``index``);
        ``logprobs``: the TokenLogprobs of this chunk's tokens."""
        if self.chat:
            out = self._base("chat.completion.chunk")
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
            out["choices"] = [{"index": 0, "delta": delta, "logprobs": self.logprobs(logprobs),
                               "finish_reason": finish_reason}]
        else:
            out = self._base("text_completion")
            out["choices"] = [{"index": 0, "text": text or "", "logprobs": self.logprobs(logprobs),
                               "finish_reason": finish_reason}]
        if extra is not None:
            out["hoshikage"] = extra
        return out

    def logprobs(self, tokens: list[Any] | None) -> dict[str, Any] | None:
        """OpenAI's logprobs object for ``tokens`` (TokenLogprob), or None when not asked for.
        Chat: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}``; completions:
        ``{tokens, token_logprobs, top_logprobs, text_offset}``."""
        if tokens is None:
            return None
        if self.chat:
            return {"content": [{**_entry(t.text, t.piece, t.logprob),
                                 "top_logprobs": [_entry(p.decode("utf-8", "replace"), p, lp) for _, p, lp in t.top]}
                                for t in tokens], "refusal": None}
        offsets = []
        for t in tokens:
            offsets.append(self._offset)
            self._offset += len(t.text)
        return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
                "top_logprobs": [{p.decode("utf-8", "replace"): lp for _, p, lp in t.top} for t in tokens],
                "text_offset": offsets}

    def usage_chunk(self, completion: Completion) -> dict[str, Any]:
        out = self._base("chat.completion.chunk" if self.chat else "text_completion")
        out["choices"] = []
        out["usage"] = usage(completion)
        return out


def _entry(text: str, piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(piece)}


def usage(completion: Completion) -> dict[str, Any]:
    """OpenAI's usage, with ``prompt_tokens_details.cached_tokens`` for autoregressive models
    (prompt tokens the prompt cache did not decode again)."""
    out: dict[str, Any] = dict(completion.usage)
    if completion.kind == "autoregressive":
        out["prompt_tokens_details"] = {"cached_tokens": completion.cached_prompt_tokens}
    return out


def finish(completion: Completion) -> str:
    """OpenAI's finish_reason: tool_calls when the answer made calls, else length or stop."""
    if completion.tool_calls and completion.finish_reason != "length":
        return "tool_calls"
    return "length" if completion.finish_reason == "length" else "stop"


def tool_call_json(call: Any) -> dict[str, Any]:
    """One entry of ``message.tool_calls`` (arguments as JSON text, as OpenAI sends them)."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def extension(completion: Completion, extra: dict[str, Any]) -> dict[str, Any]:
    params = {k: (v.name if isinstance(v, IntEnum) else v) for k, v in completion.params.items()}
    timings = {k: round(v, 4) for k, v in completion.timings.rates(completion.prompt_tokens,
                                                                   completion.completion_tokens).items()}
    timings["generation_s"] = round(completion.timings.generation_seconds, 4)
    if completion.timings.steps:
        timings["steps"] = completion.timings.steps
    out = {"kind": completion.kind, "params": params, "notes": list(completion.notes), "timings": timings}
    if completion.kind == "diffusion":
        out["forwards"] = completion.timings.forwards  # model passes (two per step with CFG)
    return {**out, **extra}


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def sse_comment(text: str) -> str:
    """An SSE comment line: clients ignore it; proxies see traffic."""
    return f": {text}\n\n"


SSE_DONE = "data: [DONE]\n\n"
