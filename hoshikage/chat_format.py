"""Structured output and tool calls through llama.cpp's own chat handling (native/chat_shim.cpp).

llama.cpp's ``common/chat`` knows each model family's tool-call format: it renders the chat
template with the ``tools`` variable, derives a grammar that constrains the calls' arguments to
their JSON schemas, and parses the calls back out of the generated text. Hoshikage uses it as
llama-server does, so the same model behaves the same way in both:

    fmt = ChatFormatter(model)
    plan = fmt.apply(messages, tools=[...], tool_choice="required")
    ...generate from plan.prompt with plan.grammar...
    message = fmt.parse(plan, text)            # ParsedMessage(content, tool_calls, ...)

``json_schema_grammar(schema)`` is llama.cpp's JSON-Schema-to-GBNF converter, for
``response_format`` without tools. Every call crosses into C only with JSON text, and every C++
exception comes back as a :class:`ChatFormatError` (never an abort).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _ffi
from .errors import HoshikageError

TOOL_CHOICES = ("auto", "none", "required")


class ChatFormatError(HoshikageError, ValueError):
    """llama.cpp refused a schema, a tool list, the messages or the model's output format."""


@dataclass(frozen=True)
class Grammar:
    """A GBNF grammar (start rule ``root``) for the sampler, as llama.cpp's sampling uses it.

    lazy: the grammar applies only from the first match of a trigger (regexes matched from the
    start of the output, or trigger token ids) — e.g. free text until a tool call starts.
    prefill: text the prompt already ends with that the grammar expects first (llama.cpp's
    ``generation_prompt``), fed to the grammar before sampling (non-lazy grammars only).
    """

    text: str
    lazy: bool = False
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[int, ...] = ()
    prefill: str = ""


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: ``arguments`` is JSON text (as OpenAI sends it)."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class ParsedMessage:
    """The assistant message parsed out of the generated text."""

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_content: str = ""


@dataclass(frozen=True)
class ChatPlan:
    """What llama.cpp's chat handling made of a request: the prompt text, the grammar (or None),
    extra stop strings, and how to parse the output (``format_name`` is llama.cpp's name)."""

    prompt: str
    grammar: Grammar | None
    additional_stops: tuple[str, ...]
    format_name: str
    parser: Mapping[str, Any] = field(repr=False, default_factory=dict)
    preserved_tokens: tuple[str, ...] = ()


def shim_error(error: Any) -> str:
    """The message a shim call left in ``error`` (``char **``), freed; "unknown error" if none."""
    ffi, chat = _ffi.ffi, _ffi.chat_lib()
    if error[0] == ffi.NULL:
        return "unknown error"
    try:
        return ffi.string(error[0]).decode("utf-8", "replace")
    finally:
        chat.hk_chat_free(error[0])


def _take_string(chat: Any, ptr: Any, error: Any, what: str) -> str:
    """The malloc'd result of a shim call as text (freed), or ChatFormatError with its message."""
    ffi = _ffi.ffi
    if ptr == ffi.NULL:
        raise ChatFormatError(f"{what}: {shim_error(error)}")
    try:
        return ffi.string(ptr).decode("utf-8", "replace")
    finally:
        chat.hk_chat_free(ptr)


def _json_arg(value: Any, what: str) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ChatFormatError(f"{what} is not JSON-serialisable: {exc}") from exc


def json_schema_grammar(schema: Mapping[str, Any]) -> Grammar:
    """llama.cpp's GBNF for JSON matching ``schema`` (a JSON Schema object; ``{}`` = any JSON)."""
    if not isinstance(schema, Mapping):
        raise ChatFormatError(f"a JSON schema must be an object, got {type(schema).__name__}")
    chat, ffi = _ffi.chat_lib(), _ffi.ffi
    error = ffi.new("char **")
    text = _take_string(chat, chat.hk_json_schema_to_grammar(_json_arg(dict(schema), "the schema"), error),
                        error, "the JSON schema cannot be turned into a grammar")
    return Grammar(text)


class _Templates:
    """One ``common_chat_templates`` object of llama.cpp (freed on close or garbage collection)."""

    def __init__(self, model: Any, template: str | None):
        chat, ffi = _ffi.chat_lib(), _ffi.ffi
        self.chat = chat
        error = ffi.new("char **")
        handle = chat.hk_chat_templates_init(model.ptr, template.encode("utf-8") if template else ffi.NULL, error)
        if handle == ffi.NULL:
            _take_string(chat, ffi.NULL, error, "the chat template cannot be read by llama.cpp")
        self.handle = ffi.gc(handle, chat.hk_chat_templates_free)
        error = ffi.new("char **")
        self.caps: dict[str, bool] = json.loads(_take_string(chat, chat.hk_chat_templates_caps(self.handle, error),
                                                             error, "the chat template's capabilities"))

    @property
    def supports_tools(self) -> bool:
        return bool(self.caps.get("supports_tool_calls"))

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            _ffi.ffi.release(handle)


class ChatFormatter:
    """llama.cpp's chat handling for one model: its own template, or ``template_override``.

    A ChatML model whose template has no tool use (llama.cpp finds no tool-call format in it)
    renders requests that carry tools with Hoshikage's ChatML tool template instead
    (``hoshikage.tool_templates``), keeping the model's default system prompt. The model must
    outlive the formatter; ``close()`` frees the C side (also done on garbage collection).
    """

    def __init__(self, model: Any, template_override: str | None = None):
        self._model = model
        self._own = _Templates(model, template_override)
        self._tools: _Templates | None = None

    @property
    def supports_tools(self) -> bool:
        """Whether tool requests can be honoured (by the model's template or the ChatML fallback)."""
        return self._tool_templates() is not None

    def _tool_templates(self) -> _Templates | None:
        if self._own.supports_tools:
            return self._own
        if self._tools is None:
            from .tool_templates import chatml_tool_template, is_chatml

            source = getattr(self._model, "chat_template", None)
            if not is_chatml(source):
                return None
            self._tools = _Templates(self._model, chatml_tool_template(_default_system(self._model)))
        return self._tools

    def apply(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
              tool_choice: str = "auto", json_schema: Mapping[str, Any] | None = None,
              parallel_tool_calls: bool | None = None) -> ChatPlan:
        """Render ``messages`` (OpenAI shape, tool calls and tool results included) with ``tools``
        (OpenAI ``{"type": "function", "function": {...}}`` list) as llama-server would.
        ``tool_choice`` "required" constrains the answer to calls; "none" renders the tools but
        asks for none. ChatFormatError if the model cannot use tools."""
        if tool_choice not in TOOL_CHOICES:
            raise ChatFormatError(f"tool_choice must be one of {', '.join(TOOL_CHOICES)}, got {tool_choice!r}")
        templates = self._own
        if tools or has_tool_history(messages):
            templates = self._tool_templates()
            if templates is None:
                raise ChatFormatError("this model's chat template has no tool use that llama.cpp recognises, "
                                      "and it is not a ChatML template Hoshikage could extend")
        inputs: dict[str, Any] = {"messages": list(messages), "tools": list(tools or []),
                                  "tool_choice": tool_choice, "json_schema": json_schema}
        if parallel_tool_calls is not None:
            inputs["parallel_tool_calls"] = bool(parallel_tool_calls)
        error = _ffi.ffi.new("char **")
        raw = _take_string(templates.chat, templates.chat.hk_chat_apply(templates.handle,
                                                                        _json_arg(inputs, "the request"), error),
                           error, "llama.cpp's chat handling refused the request")
        out = json.loads(raw)
        grammar = None
        if out["grammar"]:
            text = out["grammar"] if tool_choice != "required" else calls_only(out["grammar"])
            if parallel_tool_calls is False:
                text = one_call(text)
            grammar = Grammar(text, lazy=bool(out["grammar_lazy"]),
                              trigger_patterns=tuple(out["trigger_patterns"]),
                              trigger_tokens=tuple(int(t) for t in out["trigger_tokens"]),
                              prefill=out["generation_prompt"])
        return ChatPlan(prompt=out["prompt"], grammar=grammar, additional_stops=tuple(out["additional_stops"]),
                        format_name=out["format_name"], preserved_tokens=tuple(out["preserved_tokens"]),
                        parser={"format": out["format"], "generation_prompt": out["generation_prompt"],
                                "parser": out["parser"]})

    def parse(self, plan: ChatPlan, text: str, *, partial: bool = False) -> ParsedMessage:
        """The assistant message in ``text`` (the generated answer), in ``plan``'s format.
        ``partial``: the text may stop mid-call (streaming); incomplete calls are left out or cut."""
        return parse_output(plan, text, partial=partial)

    def close(self) -> None:
        for templates in (self._own, self._tools):
            if templates is not None:
                templates.close()


def has_tool_history(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a conversation holds tool calls or tool results."""
    return any(isinstance(m, Mapping) and (m.get("tool_calls") or m.get("role") == "tool") for m in messages)


_FREE_TEXT = re.compile(r"\s+until-[\w-]+\?(?=\s)")


def calls_only(grammar: str) -> str:
    """``grammar`` without the free text llama.cpp allows before required tool calls.

    For ``tool_choice: "required"`` llama.cpp's grammar starts ``root ::= <generation prompt>
    space until-N? tool-calls``: any text not containing the call marker, then the calls. A small
    model rarely leaves such free text by itself, so Hoshikage drops the optional ``until-N?``
    from the root rule and the answer starts with the call. Other rules are left alone.
    """
    lines = grammar.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("root ::= "):
            lines[i] = _FREE_TEXT.sub("", line + " ").rstrip()
    return "\n".join(lines) + ("\n" if grammar.endswith("\n") else "")


_CALLS = re.compile(r"(?<=\s)tool-calls(?=\s|$)")


def one_call(grammar: str) -> str:
    """``grammar`` allowing one tool call, not a list of them (``parallel_tool_calls: false``):
    the root rule's ``tool-calls`` (one or more) becomes ``tool-call``."""
    if "\ntool-call ::= " not in "\n" + grammar:
        return grammar
    lines = grammar.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("root ::= "):
            lines[i] = _CALLS.sub("tool-call", line)
    return "\n".join(lines) + ("\n" if grammar.endswith("\n") else "")


def _default_system(model: Any) -> str:
    """The system turn the model's own template adds to a conversation without one ("" if none)."""
    try:
        text = model.apply_chat_template([{"role": "user", "content": "x"}])
    except Exception:  # a template that does not render has no default to keep
        return ""
    head = "<|im_start|>system\n"
    if not text.startswith(head) or "<|im_end|>" not in text:
        return ""
    return text[len(head):text.index("<|im_end|>")]


def parse_output(plan: ChatPlan, text: str, *, partial: bool = False) -> ParsedMessage:
    """See :meth:`ChatFormatter.parse` (needs no formatter: the plan carries the parser)."""
    chat, ffi = _ffi.chat_lib(), _ffi.ffi
    error = ffi.new("char **")
    raw = _take_string(chat, chat.hk_chat_parse(_json_arg(dict(plan.parser), "the parser"),
                                                text.encode("utf-8", "replace"), bool(partial), error),
                       error, "the model's output does not parse in its tool-call format")
    out = json.loads(raw)
    calls = tuple(ToolCall(c["name"], c["arguments"], c.get("id", "")) for c in out["tool_calls"])
    return ParsedMessage(out["content"], calls, out.get("reasoning_content", ""))
