"""Chat messages as the renderers take them: OpenAI's ``{role, content}`` objects, validated."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


def _content_text(content: Any, index: int) -> str:
    """OpenAI content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ParameterError(f"messages[{index}].content: only text parts are supported, got {part!r:.80}",
                                     f"messages.{index}.content")
        return "".join(parts)
    raise ParameterError(f"messages[{index}].content must be a string or a list of text parts, "
                         f"got {type(content).__name__}", f"messages.{index}.content")


def normalize_messages(messages: Sequence[ChatMessage | dict]) -> list[ChatMessage]:
    """Validate chat messages; raise ParameterError naming the bad message and field."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ParameterError("messages must be a list of {role, content} objects", "messages")
    if not messages:
        raise ParameterError("messages must not be empty", "messages")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            role, content = m.role, m.content
        elif isinstance(m, dict):
            if "role" not in m:
                raise ParameterError(f"messages[{i}].role is missing", f"messages.{i}.role")
            role, content = m["role"], m.get("content")
        else:
            raise ParameterError(f"messages[{i}] must be an object with role and content, got {type(m).__name__}",
                                 f"messages.{i}")
        if role not in ROLES:
            raise ParameterError(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {role!r}",
                                 f"messages.{i}.role")
        out.append(ChatMessage(role, _content_text(content, i)))
    return out
