"""What a generation returns: small dataclasses shared by both kinds of model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..chat_format import ToolCall
from .logprobs import TokenLogprob

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class Timings:
    """Seconds spent, and the rates derived from them."""

    prompt_seconds: float = 0.0  # prefill (autoregressive) — 0 for diffusion
    generation_seconds: float = 0.0  # token loop, or the whole diffusion loop
    first_token_seconds: float | None = None  # from the call to the first generated token
    decode_seconds: float = 0.0  # diffusion: time inside llama.cpp (all steps)
    sampling_seconds: float = 0.0  # diffusion: time in the numpy sampler (all steps)
    guidance_seconds: float = 0.0  # diffusion with CFG: combining the two passes' logits
    steps: int = 0  # diffusion steps actually run
    forwards: int = 0  # diffusion: model passes over the canvas (two per step with CFG)

    def rates(self, prompt_tokens: int, completion_tokens: int) -> dict[str, float]:
        out = {}
        if self.prompt_seconds > 0:
            out["prompt_tokens_per_s"] = prompt_tokens / self.prompt_seconds
        if self.generation_seconds > 0:
            out["tokens_per_s"] = completion_tokens / self.generation_seconds
        if self.steps:
            out["decode_ms_per_step"] = 1000 * self.decode_seconds / self.steps
            out["sampling_ms_per_step"] = 1000 * self.sampling_seconds / self.steps
            if self.guidance_seconds:
                out["guidance_ms_per_step"] = 1000 * self.guidance_seconds / self.steps
        return out


@dataclass
class Completion:
    """A finished generation.

    text:          the answer (stop sequence and end-of-generation token excluded).
    tokens:        generated token ids, in order (for diffusion: the answer's canvas tokens).
    prompt_tokens: tokens in the prompt as the model saw it (chat template applied).
    finish_reason: "stop" (end-of-generation token or stop sequence), "length"
                   (max_tokens reached) or "cancelled".
    params:        the effective parameters, after defaults and adjustments.
    canvas_text:   diffusion only: the whole canvas after the prompt, detokenized like
                   llama-diffusion-cli prints it.
    notes:         adjustments made to the request (e.g. steps rounded up), for the user.
    tool_calls:    calls parsed out of the answer when tools were given (``text`` is then the
                   rest of the answer); finish_reason stays what ended the generation.
    cached_prompt_tokens: prompt tokens whose KV a reused context already held (not decoded
                   again; autoregressive only).
    logprobs:      per generated token, when asked for (``generation.logprobs``), else None.
    """

    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: FinishReason
    kind: Literal["autoregressive", "diffusion"]
    timings: Timings = field(default_factory=Timings)
    params: dict[str, Any] = field(default_factory=dict)
    canvas_text: str | None = None
    notes: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    cached_prompt_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usage"] = self.usage
        out["timings"].update(self.timings.rates(self.prompt_tokens, self.completion_tokens))
        return out


@dataclass
class Chunk:
    """One piece of a streamed generation: ``text`` is the new text since the last chunk.

    The last chunk has ``finish_reason`` set and carries the whole ``completion``.
    """

    text: str
    tokens: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    completion: Completion | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of ``tokens``, when asked for
