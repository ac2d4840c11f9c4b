"""Chat with tools or a response format: prompt, grammar and the parse of the answer.

- ``json_schema`` alone: the model's own chat template (Hoshikage's bounded renderer), and
  llama.cpp's JSON-Schema grammar, so the answer always parses and validates.
- ``tools`` (or a history with tool calls / results): llama.cpp's chat handling renders the
  prompt in the model family's format and gives the grammar (lazy for ``auto``, full for
  ``required``) and the parser that turns the answer into ``Completion.tool_calls``
  (``hoshikage.chat_format``).

Diffusion models decide every canvas position in parallel, which a left-to-right grammar
cannot constrain: asking one for either is a ParameterError naming the field.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..chat_format import ChatFormatError, ChatFormatter, ChatPlan, Grammar, has_tool_history, json_schema_grammar
from ..errors import ParameterError
from ..text_limits import check_prompt_text
from .types import Completion


@dataclass(frozen=True)
class StructuredChat:
    """What a chat request asks for beyond text.

    tools: OpenAI tool definitions (``{"type": "function", "function": {name, description,
    parameters}}``). tool_choice: "auto", "none", "required", or ``{"type": "function",
    "function": {"name": ...}}`` (that tool, required). json_schema: the answer must be JSON
    valid for it (``{"type": "object"}`` for OpenAI's json_object).
    """

    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: str | Mapping[str, Any] = "auto"
    json_schema: Mapping[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def asked(self) -> str | None:
        """The request field this asks for ("tools", "response_format"), or None for plain chat."""
        if self.tools:
            return "tools"
        return "response_format" if self.json_schema is not None else None


@dataclass
class PreparedChat:
    """Prompt tokens, the grammar for the sampler, extra stop strings, and (with tools) the plan
    whose parser reads tool calls out of the answer."""

    prompt_tokens: list[int]
    grammar: Grammar | None = None
    stops: tuple[str, ...] = ()
    chat_plan: ChatPlan | None = field(default=None, repr=False)


def resolve_tool_choice(spec: StructuredChat) -> tuple[list[Mapping[str, Any]], str]:
    """(tools, llama.cpp's tool_choice): a named function keeps only that tool, required."""
    tools = list(spec.tools or [])
    choice = spec.tool_choice
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not chosen:
            names = ", ".join(str((t.get("function") or {}).get("name")) for t in tools) or "none"
            raise ParameterError(f"tool_choice names the function {name!r}, which is not among the tools "
                                 f"({names})", "tool_choice")
        return chosen, "required"
    if choice not in ("auto", "none", "required"):
        raise ParameterError(f"tool_choice must be auto, none, required or a named function, got {choice!r}",
                             "tool_choice")
    if choice == "required" and not tools:
        raise ParameterError("tool_choice is required, but no tools were given", "tool_choice")
    return tools, choice


def prepare_chat(model: Any, messages: Sequence[Mapping[str, Any]], spec: StructuredChat, *,
                 render: Callable[..., list[int]], n_ctx: int | None = None) -> PreparedChat:
    """The prompt and constraints for ``messages`` under ``spec``.

    ``render(messages)`` makes the prompt tokens when the model's own template is used (the
    caller's bounded ``prepare_prompt``); llama.cpp renders it when tools are involved.
    """
    asked = spec.asked()
    if model.is_diffusion and (asked or has_tool_history(messages)):
        raise ParameterError(f"{asked or 'tool messages'} need an autoregressive model: {model.path.name} is a "
                             "diffusion model, which decides every position of its canvas in parallel, so its "
                             "answer cannot be constrained to a format or parsed for tool calls",
                             asked or "messages")
    tools, choice = resolve_tool_choice(spec)
    schema = dict(spec.json_schema) if spec.json_schema is not None else None
    try:
        if tools or has_tool_history(messages):
            return _through_llama_cpp(model, messages, tools, choice, schema, spec.parallel_tool_calls, n_ctx)
        return PreparedChat(render(messages), json_schema_grammar(schema) if schema is not None else None)
    except ChatFormatError as exc:
        raise ParameterError(str(exc), asked or "messages") from exc


def _through_llama_cpp(model: Any, messages: Sequence[Mapping[str, Any]], tools: list[Mapping[str, Any]],
                       choice: str, schema: dict[str, Any] | None, parallel: bool | None,
                       n_ctx: int | None) -> PreparedChat:
    formatter = ChatFormatter(model)
    try:
        plan = formatter.apply(messages, tools=tools, tool_choice=choice, json_schema=schema,
                               parallel_tool_calls=parallel)
    finally:
        formatter.close()
    check_prompt_text(plan.prompt, n_ctx or model.n_ctx_train or 4096, "messages")
    tokens = model.tokenize(plan.prompt, add_special=True, parse_special=True)
    return PreparedChat(tokens, plan.grammar, plan.additional_stops, plan if tools else None)


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def with_tool_calls(completion: Completion, prepared: PreparedChat) -> Completion:
    """The completion with its tool calls parsed out (``text`` keeps the rest of the answer).

    An answer that does not parse in the format (a lazy grammar lets a model write a broken
    call) keeps its text as content, with a note."""
    if prepared.chat_plan is None:
        return completion
    from ..chat_format import parse_output

    try:
        message = parse_output(prepared.chat_plan, completion.text)
    except ChatFormatError as exc:
        return replace(completion, notes=[*completion.notes, f"the answer was left as text: {exc}"])
    calls = [replace(c, id=c.id or new_call_id()) for c in message.tool_calls]
    return replace(completion, text=message.content, tool_calls=calls)
