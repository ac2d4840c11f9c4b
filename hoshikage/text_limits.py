"""Bounds on text before llama.cpp tokenizes it.

Two costs are bounded here, before any text reaches C:

- **Runs of one character class.** Pre-tokenizers that llama.cpp has no hand-written splitter
  for (deepseek-llm, deepseek-coder, deepseek-v3, falcon, ...) split text with ``std::regex``,
  which recurses once per character of a match: a run of about 27,000 letters, digits, spaces
  or punctuation in one match overflows an 8 MiB stack and the process dies (SIGSEGV;
  llama.cpp issue 27783). The longest run of one class is capped at ``MAX_CLASS_RUN``
  characters (about 1.2 MiB of stack at the ~300 bytes per character measured). Classes are
  conservative supersets of the ones those regexes repeat: whitespace; word characters
  (letters, digits and other numbers, combining marks, CJK); everything else (punctuation,
  symbols, ``_``).
- **Length.** A text longer than ``MAX_CHARS_PER_TOKEN`` characters per position of the
  context can never fit it (tokens that long are rare: SmolLM2's longest are 64 spaces), so it
  is refused without tokenizing it.
"""
from __future__ import annotations

import functools
import re
import unicodedata

from .errors import ParameterError

MAX_CLASS_RUN = 4096
MAX_CHARS_PER_TOKEN = 64


@functools.cache
def _runs() -> re.Pattern[str]:
    """Maximal runs of one class (built once: the combining marks come from unicodedata)."""
    marks = [c for c in range(0x110000) if unicodedata.category(chr(c)).startswith("M")]
    ranges, start = [], marks[0]
    for prev, cur in zip(marks, marks[1:] + [-1]):
        if cur != prev + 1:
            ranges.append(f"\\U{start:08x}" + (f"-\\U{prev:08x}" if prev != start else ""))
            start = cur
    word = f"(?:[^\\W_]|[{''.join(ranges)}])+"
    return re.compile(f"(?P<whitespace>\\s+)|(?P<word>{word})|(?P<punctuation>(?:[^\\w\\s]|_)+)")


def longest_run(text: str) -> tuple[int, str, int]:
    """(length, class, start) of the longest run of one character class in ``text``."""
    best = (0, "", 0)
    for m in _runs().finditer(text):
        if m.end() - m.start() > best[0]:
            best = (m.end() - m.start(), m.lastgroup or "", m.start())
    return best


def check_runs(text: str, field: str = "text") -> None:
    """ParameterError naming ``field`` if ``text`` has a run of one class longer than MAX_CLASS_RUN."""
    if len(text) <= MAX_CLASS_RUN:
        return
    length, kind, start = longest_run(text)
    if length > MAX_CLASS_RUN:
        raise ParameterError(f"{field} has a run of {length} {kind} characters (from character {start}); at "
                             f"most {MAX_CLASS_RUN} in a row: llama.cpp's regex pre-tokenizers crash on much longer "
                             "runs", field)


def check_length(text: str, n_ctx: int, field: str = "text") -> None:
    """ParameterError naming ``field`` if ``text`` is too long to ever fit a context of ``n_ctx`` tokens."""
    limit = max(1, n_ctx) * MAX_CHARS_PER_TOKEN
    if len(text) > limit:
        raise ParameterError(f"{field} has {len(text)} characters, more than a context of {n_ctx} tokens can "
                             f"hold (at most {limit}: {MAX_CHARS_PER_TOKEN} per token)", field)


def check_prompt_text(text: str, n_ctx: int, field: str = "prompt") -> None:
    """Both checks, length first (it bounds the run scan's work)."""
    check_length(text, n_ctx, field)
    check_runs(text, field)
