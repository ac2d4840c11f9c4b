"""Chat messages and the jinja2 fallback for chat templates llama.cpp's engine does not know.

The jinja environment follows Hugging Face's (and llama.cpp's jinja path): sandboxed,
``trim_blocks`` and ``lstrip_blocks`` on, with ``raise_exception`` and ``strftime_now``.
"""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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
                raise ValueError(f"messages[{index}].content: only text parts are supported, got {part!r:.80}")
        return "".join(parts)
    raise ValueError(f"messages[{index}].content must be a string or a list of text parts, "
                     f"got {type(content).__name__}")


def normalize_messages(messages: Sequence[ChatMessage | dict]) -> list[ChatMessage]:
    """Validate chat messages; raise ValueError naming the bad message and field."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {role, content} objects")
    if not messages:
        raise ValueError("messages must not be empty")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            role, content = m.role, m.content
        elif isinstance(m, dict):
            if "role" not in m:
                raise ValueError(f"messages[{i}].role is missing")
            role, content = m["role"], m.get("content")
        else:
            raise ValueError(f"messages[{i}] must be an object with role and content, got {type(m).__name__}")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {role!r}")
        out.append(ChatMessage(role, _content_text(content, i)))
    return out


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_jinja_chat_template(template: str, messages: Sequence[ChatMessage], *,
                               add_generation_prompt: bool, bos_token: str = "", eos_token: str = "") -> str:
    """Render a Hugging Face style jinja chat template."""
    try:
        compiled = _compile(template)
        return compiled.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token,
            enable_thinking=True)  # llama.cpp's default (common_chat_templates_inputs)
    except ValueError:
        raise
    except Exception as exc:  # jinja2's syntax, undefined-variable and sandbox errors
        raise ValueError(f"the chat template does not render: {exc}") from exc
