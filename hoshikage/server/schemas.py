"""Request bodies: OpenAI's chat and completions shapes, plus Hoshikage's extra fields.

Extra fields are top-level, which is also where the openai SDK's ``extra_body`` puts them:
``repeat_penalty``, ``repeat_last_n``, ``top_k``, ``min_p`` and the diffusion parameters
(``diffusion_steps``, ``diffusion_algorithm`` — a number or a name —, ``diffusion_schedule``,
``diffusion_eps``, ``diffusion_block_length``, ``diffusion_alg_temp``, ``diffusion_cfg_scale``,
``diffusion_stream_blocks``). Unknown OpenAI fields are ignored so chat UIs keep working; an
unknown ``diffusion_*`` field is refused, since it is almost certainly a typo.

Every body model derives from ``Checked``: a string with a lone surrogate anywhere in a field
(``"\\ud800"`` in JSON) is refused naming that field, before anything runs; such text could not
be encoded in the response. Stop strings are bounded (``MAX_STOP``, ``MAX_STOP_CHARS``).
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from ..sampling.params import DIFFUSION_PARAMS, SHARED_PARAMS
from .param_fields import defaults_fields, request_fields, request_values
from .text_rules import MODEL_NAME_MAX, model_name_problem, surrogate_problem

MAX_STOP = 16  # stop strings per request (or per model)
# Each stop string's length: the text stream holds back up to this much of the answer and
# compares every suffix with it per token, so the cost per token grows with its square.
MAX_STOP_CHARS = 256
MAX_DESCRIPTION_CHARS = 1000


def check_stops(value: str | list[str] | None) -> list[str]:
    """The stop strings as a list (empty ones dropped); ValueError past MAX_STOP or MAX_STOP_CHARS."""
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > MAX_STOP:
        raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
    for i, stop in enumerate(stops):
        if len(stop) > MAX_STOP_CHARS:
            raise ValueError(f"stop string {i} has {len(stop)} characters; at most {MAX_STOP_CHARS}")
    return [s for s in stops if s]


def refuse_problem(problem: str | None, value: Any) -> Any:
    """``value`` if ``problem`` (a text rule's verdict) is None, else ValueError(problem)."""
    if problem is not None:
        raise ValueError(problem)
    return value


class Checked(BaseModel):
    """A request body (or part of one) whose strings must all be valid Unicode."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_lone_surrogate_text(cls, value: Any) -> Any:
        """A plain string, before its constraints (which cannot read such text) are checked."""
        return cls._no_lone_surrogates(value) if isinstance(value, str) else value

    @field_validator("*", mode="after")
    @classmethod
    def _no_lone_surrogates(cls, value: Any) -> Any:
        """Any string in the validated value (lists, content parts), named from the innermost field."""
        return refuse_problem(surrogate_problem(value), value)


class StreamOptions(Checked):
    include_usage: bool = False


class _Head(Checked):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1, description="A registered model name (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Answer length; for diffusion, the canvas "
                                   "after the prompt. Default: MAX_TOKENS.")


# temperature, top_p, top_k, min_p, the penalties, seed: declared in sampling/params.py
_Sampling = create_model("_Sampling", __base__=_Head, **request_fields(SHARED_PARAMS))


class _Middle(_Sampling):
    stop: str | list[str] | None = Field(None, description=f"Up to {MAX_STOP} stop strings of at most "
                                         f"{MAX_STOP_CHARS} characters, merged with the model's.")
    n: int = Field(1, ge=1, le=1, description="Only one choice is generated.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


# diffusion_steps, diffusion_algorithm, ...: declared in sampling/params.py
_Diffusion = create_model("_Diffusion", __base__=_Middle, **request_fields(DIFFUSION_PARAMS))


class GenerationFields(_Diffusion):
    """What chat and completions share: sampling, stop, streaming and the diffusion fields."""

    diffusion_stream_blocks: bool | None = Field(None, description="Stream settled text while a diffusion "
                                                 "model runs (opt-in; see docs/server.md).")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_diffusion_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if isinstance(key, str) and key.startswith("diffusion_") and key not in known:
                    raise ValueError(f"unknown diffusion parameter {key!r}; known: "
                                     + ", ".join(sorted(k for k in known if k.startswith("diffusion_"))))
        return data

    @field_validator("stop", mode="after")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str]:
        return check_stops(value)

    def diffusion_overrides(self) -> dict[str, Any]:
        """The diffusion fields this request set, under DiffusionParams' names."""
        return request_values(self, DIFFUSION_PARAMS)

    def sampling_overrides(self) -> dict[str, Any]:
        """The shared sampling fields this request set (temperature, ..., seed)."""
        return request_values(self, SHARED_PARAMS)


MAX_TOOLS = 128  # function definitions per request
FUNCTION_NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # OpenAI's rule for function names


class FunctionIn(Checked):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(..., pattern=FUNCTION_NAME)
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object.")
    strict: bool | None = None


class ToolIn(Checked):
    """One tool of ``tools``: OpenAI's ``{"type": "function", "function": {...}}``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionIn


class NamedFunction(Checked):
    name: str = Field(..., pattern=FUNCTION_NAME)


class NamedToolChoice(Checked):
    """``tool_choice: {"type": "function", "function": {"name": ...}}``: call exactly this tool."""

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(Checked):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema", description="A JSON Schema object.")
    strict: bool | None = None


class ResponseFormat(Checked):
    """``response_format``: text, any JSON object, or JSON valid for a schema (grammar-constrained)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format type json_schema needs a json_schema object")
        return self

    def schema_or_none(self) -> dict[str, Any] | None:
        """The JSON Schema the answer must satisfy (json_object: any object), None for text."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            return self.json_schema.schema_ if self.json_schema else {}
        return None


class ToolCallFunctionIn(Checked):
    model_config = ConfigDict(extra="ignore")

    name: str
    arguments: str | dict[str, Any] = ""


class ToolCallIn(Checked):
    """An earlier call in the history (an assistant message's ``tool_calls``)."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunctionIn


class ChatMessageIn(Checked):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = None
    name: str | None = None

    def as_openai(self) -> dict[str, Any]:
        """This message as llama.cpp's chat handling reads OpenAI messages."""
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                               "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id or f"call_{i}", "type": "function",
                                  "function": {"name": c.function.name, "arguments": c.function.arguments
                                               if isinstance(c.function.arguments, str)
                                               else json.dumps(c.function.arguments)}}
                                 for i, c in enumerate(self.tool_calls)]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out

    @field_validator("content", mode="after")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported")
            return "".join(p["text"] for p in value)
        return value


class ChatCompletionRequest(GenerationFields):
    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")
    response_format: ResponseFormat | None = Field(None, description="json_object / json_schema: the answer "
                                                   "is grammar-constrained JSON (autoregressive models).")
    tools: list[ToolIn] | None = Field(None, max_length=MAX_TOOLS, description="Functions the model may call "
                                       "(autoregressive models), in the model family's format.")
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Accepted by OpenAI, not implemented here: declared so that asking for them is refused
    # (see unsupported()) instead of being dropped with the other unknown fields.
    logprobs: bool | None = Field(None, description="Log probabilities of the answer's tokens "
                                  "(autoregressive models).")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token (needs logprobs).")
    logit_bias: dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    prediction: Any = None
    audio: Any = None
    modalities: list[str] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) for the first field asked for that Hoshikage does not implement, else None."""
        checks = [("top_logprobs", self.top_logprobs is not None and not self.logprobs,
                   "top_logprobs needs logprobs: true"),
                  ("logit_bias", bool(self.logit_bias), "logit_bias is not supported yet"),
                  ("functions", bool(self.functions), "the legacy functions field is not supported; send tools"),
                  ("function_call", self.function_call not in (None, "none", "auto"),
                   "the legacy function_call field is not supported; send tool_choice"),
                  ("prediction", self.prediction is not None, "predicted outputs are not supported"),
                  ("audio", self.audio is not None, "audio output is not supported"),
                  ("modalities", bool(self.modalities) and self.modalities != ["text"], "only text output")]
        return next(((name, why) for name, asked, why in checks if asked), None)

    def requested_logprobs(self) -> int | None:
        """How many alternatives per token to report (0: only the token's own), or None: off."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def uses_tool_history(self) -> bool:
        """Whether the history holds tool calls or tool results (which only llama.cpp's chat
        handling renders in the model family's format)."""
        return any(m.tool_calls or m.role == "tool" for m in self.messages)

    def openai_messages(self) -> list[dict[str, Any]]:
        return [m.as_openai() for m in self.messages]

    def as_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.content or ""}
                for m in self.messages]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(GenerationFields):
    prompt: str | list[str] = Field(..., description="Raw text (no chat template); one prompt only.")
    echo: bool = False
    # Accepted by OpenAI's completions, not implemented here (refused by unsupported()).
    logprobs: int | None = Field(None, ge=0, le=5, description="Log probabilities of the answer's tokens and "
                                 "this many alternatives each (autoregressive models).")
    logit_bias: dict[str, Any] | None = None
    suffix: str | None = None
    best_of: int | None = None
    response_format: Any = None
    tools: Any = None

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) for the first field asked for that Hoshikage does not implement, else None."""
        checks = [("echo", self.echo, "echo is not supported"),
                  ("logit_bias", bool(self.logit_bias), "logit_bias is not supported yet"),
                  ("suffix", bool(self.suffix), "suffix (fill-in-the-middle) is not supported"),
                  ("best_of", self.best_of not in (None, 1), "only one completion is generated"),
                  ("response_format", self.response_format is not None,
                   "response_format belongs to /v1/chat/completions"),
                  ("tools", self.tools is not None, "tools belong to /v1/chat/completions")]
        return next(((name, why) for name, asked, why in checks if asked), None)

    @field_validator("prompt", mode="after")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError(f"exactly one prompt is supported, got {len(value)}")
            value = value[0]
        if not value:
            raise ValueError("the prompt is empty")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_logprobs(self) -> int | None:
        return self.logprobs


class _Forbid(Checked):
    model_config = ConfigDict(extra="forbid")


DiffusionDefaults = create_model("DiffusionDefaults", __base__=_Forbid, __module__=__name__,
                                 __doc__="Per-model diffusion defaults in the registry (DiffusionParams' "
                                 "names), derived from sampling/params.py.", **defaults_fields(DIFFUSION_PARAMS))


class AddModelRequest(Checked):
    """POST /admin/models."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=MODEL_NAME_MAX,
                      description="Printable text, no surrounding whitespace, no '/'.")
    path: str = Field(..., min_length=1, description="Path of the .gguf file on the server's machine.")
    stop: list[str] = Field(default_factory=list)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    test_model: bool = False
    diffusion: DiffusionDefaults | None = None

    @field_validator("name", mode="after")
    @classmethod
    def _name(cls, value: str) -> str:
        return refuse_problem(model_name_problem(value), value)

    @field_validator("stop", mode="after")
    @classmethod
    def _stop(cls, value: list[str]) -> list[str]:
        return check_stops(value)
