"""Rules for text that enters the server: no lone surrogates anywhere, and what a model name may be.

JSON allows ``"\\ud800"`` (half of a UTF-16 pair); Python keeps it as a lone surrogate, which
no UTF-8 encoder accepts, so the response (or the registry file) that echoes it would fail
after the work is done. Such text is refused where it enters, naming the field.

A model name appears in log lines, in ``hoshikage list`` and in every response: it must be
printable text (no control, format or line-separator characters, which would forge log lines or
send terminal escapes), at most ``MODEL_NAME_MAX`` characters, with no surrounding whitespace
and no ``/``.
"""
from __future__ import annotations

from typing import Any

MODEL_NAME_MAX = 128


def lone_surrogate_at(text: str) -> int | None:
    """Index of the first lone surrogate in ``text`` (which UTF-8 cannot encode), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def surrogate_problem(value: Any) -> str | None:
    """Where a lone surrogate sits in a string, or in any string of nested lists and dicts (keys
    included): e.g. ``"[2]: a lone surrogate (U+D800) at character 5"``; None if there is none."""
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        where, item = todo.pop()
        if isinstance(item, str):
            at = lone_surrogate_at(item)
            if at is not None:
                return (f"{where}: " if where else "") + (f"a lone surrogate (U+{ord(item[at]):04X}) at character "
                                                          f"{at}; text must be valid Unicode")
        elif isinstance(item, dict):
            for key, sub in item.items():
                todo.append((f"{where}[{key!r}]", key))
                todo.append((f"{where}[{key!r}]", sub))
        elif isinstance(item, (list, tuple)):
            todo.extend((f"{where}[{i}]", sub) for i, sub in enumerate(item))
    return None


def model_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a model name, or None when it can."""
    if not isinstance(name, str):
        return f"a model name must be text, got {type(name).__name__}"
    if not name:
        return "a model name cannot be empty"
    if len(name) > MODEL_NAME_MAX:
        return f"a model name has at most {MODEL_NAME_MAX} characters, got {len(name)}"
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        return (f"a model name must be printable text: {name!r} contains U+{ord(bad):04X} (control, format "
                "or separator characters would forge log lines or terminal output)")
    if name != name.strip():
        return f"a model name cannot start or end with whitespace: {name!r}"
    if "/" in name:
        return f"a model name cannot contain '/': {name!r}"
    return None


def shown(text: str) -> str:
    """``text`` safe to print on a terminal or in one log line: unchanged when printable,
    else with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\ud800``...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)
