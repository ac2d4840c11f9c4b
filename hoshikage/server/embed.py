"""POST /v1/embeddings: the plan (request side), the job (worker side) and the OpenAI response.

An embeddings request is a Job like a generation: it waits in the same queue and runs on the
same worker thread, so the model is loaded on demand (one model resident at a time) and the
embeddings context is the residency's context of kind "embedding", freed with the model on idle
unload or a switch. Bounds (EMBEDDING_MAX_INPUTS, EMBEDDING_MAX_TOKENS, the context per input) and
every token id are checked before llama.cpp sees anything; errors name ``input``, ``model`` or
``dimensions``. Vectors are pooled and L2-normalised as llama-server's /v1/embeddings does
(hoshikage/embeddings.py).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from ..embeddings import check_can_embed, embed_tokens, embedding_width, prepare_inputs
from ..errors import ContextError, GenerationCancelled, HoshikageError
from .errors import APIError
from .job_runner import JobRunner, deadline_stop
from .registry import ModelEntry
from .schemas import Checked
from .settings import Settings
from .worker import Job


class EmbeddingRequest(Checked):
    """POST /v1/embeddings (OpenAI's shape). ``input`` becomes a list of strings or a list of token
    lists (one string, or one flat token list, is a list of one)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, description="A registered autoregressive model (GET /v1/models).")
    input: list[str] | list[list[int]] = Field(..., description="A string, a list of strings, a list of token "
                                               "ids, or a list of lists of token ids (EMBEDDING_MAX_INPUTS, "
                                               "EMBEDDING_MAX_TOKENS).")
    encoding_format: Literal["float", "base64"] | None = Field(None, description="float (default) or base64 "
                                                               "(little-endian float32).")
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's embedding size if given.")
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        """Strict shapes (no bools or numeric strings as token ids), each input non-empty."""
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError("input must be a string or a non-empty list of strings or token ids")
        if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            value = [value]
        kind = str if isinstance(value[0], str) else list
        for i, item in enumerate(value):
            if not isinstance(item, (str, list)):
                raise ValueError(f"input[{i}] must be a string or a list of token ids, got {type(item).__name__}")
            if not isinstance(item, kind):
                raise ValueError(f"input[{i}]: every input must be of one kind, all strings or all token lists")
            if not item:
                raise ValueError(f"input[{i}] is empty")
            if kind is list:
                for j, tok in enumerate(item):
                    if not isinstance(tok, int) or isinstance(tok, bool) or tok < 0:
                        raise ValueError(f"input[{i}][{j}] = {tok!r} is not a token id (an int >= 0)")
        return value


@dataclass
class EmbeddingPlan:
    entry: ModelEntry
    inputs: list[str] | list[list[int]]
    base64: bool
    dimensions: int | None
    info: dict[str, Any] = field(default_factory=dict)


def make_embedding_plan(req: EmbeddingRequest, entry: ModelEntry, settings: Settings) -> EmbeddingPlan:
    """The request's inputs within EMBEDDING_MAX_INPUTS (and, for token ids, EMBEDDING_MAX_TOKENS)."""
    n = len(req.input)
    if n > settings.embedding_max_inputs:
        raise APIError("validation_error", f"input has {n} items; at most EMBEDDING_MAX_INPUTS="
                       f"{settings.embedding_max_inputs} per request", param="input", status=400)
    if isinstance(req.input[0], list):
        check_total(sum(len(t) for t in req.input), settings)
    return EmbeddingPlan(entry=entry, inputs=req.input, base64=req.encoding_format == "base64",
                         dimensions=req.dimensions)


def check_total(n_tokens: int, settings: Settings) -> None:
    if n_tokens > settings.embedding_max_tokens:
        raise APIError("validation_error", f"input has {n_tokens} tokens in all; at most EMBEDDING_MAX_TOKENS="
                       f"{settings.embedding_max_tokens} per request", param="input", status=400)


class EmbeddingRunner(JobRunner):
    """Runs an EmbeddingPlan's Job on the worker thread; emits ("done", response body)."""

    what = "embedding"

    def kind_of(self, model: Any) -> str:
        return "embedding"

    def execute(self, job: Job, model: Any, kind: str) -> tuple[np.ndarray, int] | None:
        vectors, n_tokens = self._embed(job, job.plan, model)
        return None if vectors is None else (vectors, n_tokens)

    def summary(self, result: tuple[np.ndarray, int], elapsed: float) -> str:
        vectors, n_tokens = result
        return f"inputs={len(vectors)} prompt_tokens={n_tokens} time={elapsed:.2f}s"

    def response(self, job: Job, result: tuple[np.ndarray, int], elapsed: float) -> dict[str, Any]:
        vectors, n_tokens = result
        return embedding_response(job.plan, vectors, n_tokens, elapsed)

    def _embed(self, job: Job, plan: EmbeddingPlan, model: Any) -> tuple[np.ndarray | None, int]:
        name = plan.entry.name
        try:
            check_can_embed(model)
        except ValueError as exc:
            raise APIError("validation_error", f"{name} cannot give embeddings: {exc}", param="model",
                           status=400) from exc
        width = embedding_width(model)
        if plan.dimensions is not None and plan.dimensions != width:
            raise APIError("validation_error", f"dimensions={plan.dimensions}: {name} gives {width}-dimensional "
                           f"embeddings and cannot shorten them; leave dimensions out or set it to {width}",
                           param="dimensions", status=400)
        try:
            token_lists = prepare_inputs(model, plan.inputs)
        except ValueError as exc:
            message = str(exc)
            if "vocabulary" in message:
                message += (" (token ids must come from this model's tokenizer; LangChain's OpenAIEmbeddings "
                            "sends tiktoken ids unless check_embedding_ctx_length=False)")
            raise APIError("validation_error", message, param="input", status=400) from exc
        n_tokens = sum(len(t) for t in token_lists)
        check_total(n_tokens, self.settings)
        limit = self.residency.max_tokens_in_context()
        longest = max(len(t) for t in token_lists)
        if longest > limit:
            i = next(i for i, t in enumerate(token_lists) if len(t) == longest)
            raise APIError("validation_error", f"input[{i}] has {longest} tokens, more than the context of "
                           f"{limit} tokens (N_CTX / the model's training length)", param="input", status=400)
        try:
            context = self.residency.context("embedding", longest)
        except (ContextError, ValueError) as exc:
            raise APIError("inference_failed", f"could not create an embeddings context of {longest} tokens: "
                           f"{exc}") from exc
        timeout = self.settings.request_timeout
        should_stop = deadline_stop(job, timeout)

        try:
            vectors = embed_tokens(context, token_lists, should_stop=should_stop)
        except GenerationCancelled as exc:
            if job.cancel_reason == "timeout":
                raise APIError("processing_timeout", f"embedding took longer than {timeout:.1f}s (REQUEST_TIMEOUT) "
                               f"and was {exc}") from None
            if job.cancel_reason == "shutdown":
                raise APIError("shutting_down", f"the server is shutting down; embedding {exc}") from None
            return None, n_tokens
        except (HoshikageError, ValueError) as exc:
            raise APIError("inference_failed", f"embedding failed: {exc}") from exc
        if not np.isfinite(vectors).all():
            raise APIError("inference_failed", f"{name} gave embeddings that are not finite numbers (NaN or "
                           "infinity): the model file is likely broken")
        plan.info.update(pooling=context.pooling_type, prompt_tokens=n_tokens)
        return vectors, n_tokens


def encode_vector(vector: np.ndarray, as_base64: bool) -> list[float] | str:
    """One embedding as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if as_base64:
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32).tolist()


def embedding_response(plan: EmbeddingPlan, vectors: np.ndarray, n_tokens: int, elapsed: float) -> dict[str, Any]:
    """OpenAI's ``{"object": "list", "data": [...], "model", "usage"}``, plus ``hoshikage`` (pooling,
    normalisation, time)."""
    from ..context import POOLING_TYPES

    data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, plan.base64)}
            for i, v in enumerate(vectors)]
    extra: dict[str, Any] = {"kind": "embedding", "pooling": POOLING_TYPES.get(plan.info.get("pooling"), "?"),
                             "normalized": "l2", "time_s": round(elapsed, 4), "model_entry": plan.entry.name}
    if plan.entry.test_model:
        extra["test_model"] = True
    return {"object": "list", "data": data, "model": plan.entry.name,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}, "hoshikage": extra}
