"""Streaming an answer that may hold tool calls: partial parses turned into OpenAI deltas.

After each piece of text the answer so far is parsed by llama.cpp's parser in partial mode; what
grew since the last parse is sent: new content text, a new call (its id and name), or more of a
call's arguments. A parse that is not an extension of the previous one (a parser changing its
mind mid-call) sends nothing until the text settles; ``finish`` sends what is left.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..chat_format import ChatFormatError, ChatPlan, ParsedMessage, parse_output
from .structured import new_call_id
from .types import Completion


class ToolCallStream:
    """Feed text pieces with ``push``; each returns (content delta, tool-call deltas) where a
    tool-call delta is OpenAI's ``{"index", "id", "type", "function": {"name", "arguments"}}``
    (id, type and name only in a call's first delta)."""

    def __init__(self, plan: ChatPlan):
        self.plan = plan
        self.text = ""
        self.content = ""
        self.calls: list[dict[str, str]] = []  # per index: id, name, arguments sent so far

    def push(self, piece: str) -> tuple[str, list[dict[str, Any]]]:
        self.text += piece
        try:
            message = parse_output(self.plan, self.text, partial=True)
        except ChatFormatError:
            return "", []
        return self._diff(message)

    def finish(self, completion: Completion) -> tuple[Completion, str, list[dict[str, Any]]]:
        """The completion with the streamed calls' ids, and the deltas not sent yet."""
        message = ParsedMessage(completion.text, tuple(completion.tool_calls))
        content, deltas = self._diff(message)
        calls = [replace(c, id=self.calls[i]["id"]) if i < len(self.calls) else c
                 for i, c in enumerate(completion.tool_calls)]
        return replace(completion, tool_calls=calls), content, deltas

    def _diff(self, message: ParsedMessage) -> tuple[str, list[dict[str, Any]]]:
        content = ""
        if message.content.startswith(self.content):
            content, self.content = message.content[len(self.content):], message.content
        deltas: list[dict[str, Any]] = []
        for i, call in enumerate(message.tool_calls):
            delta: dict[str, Any] = {"index": i, "function": {"arguments": ""}}
            if i == len(self.calls):
                if not call.name:
                    break
                self.calls.append({"id": call.id or new_call_id(), "name": call.name, "arguments": ""})
                delta = {"index": i, "id": self.calls[i]["id"], "type": "function",
                         "function": {"name": call.name, "arguments": ""}}
            sent = self.calls[i]["arguments"]
            if len(call.arguments) > len(sent) and call.arguments.startswith(sent):
                delta["function"]["arguments"] = call.arguments[len(sent):]
                self.calls[i]["arguments"] = call.arguments
            # One entry per call and chunk, as OpenAI sends them: clients that merge pieces by
            # index across chunks only (LangChain) would split a call given two entries at once.
            if "id" in delta or delta["function"]["arguments"]:
                deltas.append(delta)
        return content, deltas
