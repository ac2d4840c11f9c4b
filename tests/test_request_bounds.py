"""Library bounds on what reaches llama.cpp: prompt text (hoshikage.text_limits) and the penalty
look-back (docs/reliability.md section 8, rows 1 and 12)."""
from __future__ import annotations

import pytest

import hoshikage as hk
from hoshikage.generation.autoregressive import penalty_window
from hoshikage.text_limits import MAX_CHARS_PER_TOKEN, MAX_CLASS_RUN, check_prompt_text, check_runs, longest_run


@pytest.mark.parametrize("text,kind", [
    ("a" * 5000, "word"), ("7" * 5000, "word"), ("日" * 5000, "word"),
    ("a\u0301" * 2500, "word"),  # letters and combining marks: one [\p{L}\p{M}]+ match
    ("1\u00b2" * 2500, "word"),  # digits and other numbers: one \p{N}+ match
    (" \t\n" * 2000, "whitespace"), ("!" * 5000, "punctuation"), ("_-" * 2500, "punctuation"),
])
def test_runs_of_one_class(text, kind):
    edge = " " if kind == "punctuation" else ","  # a character of another class on each side
    length, got, start = longest_run("ok" + edge + text + edge + "end")
    assert (length, got, start) == (len(text), kind, 3)


def test_alternating_classes_are_short_runs():
    assert longest_run("a!" * 5000)[0] == 1
    assert longest_run("hello world. " * 1000)[0] == 5
    check_runs("hello world. " * 10_000)


def test_run_bound_names_the_field():
    check_runs("!" * MAX_CLASS_RUN, "prompt")
    with pytest.raises(ValueError, match=r"^messages has a run of 4097 punctuation characters"):
        check_runs("!" * (MAX_CLASS_RUN + 1), "messages")


def test_length_bound_follows_the_context():
    check_prompt_text("a " * (256 * MAX_CHARS_PER_TOKEN // 2), 256, "prompt")
    with pytest.raises(ValueError, match=r"^prompt has 16386 characters, more than a context of 256 tokens"):
        check_prompt_text("a " * (256 * MAX_CHARS_PER_TOKEN // 2 + 1), 256, "prompt")


def test_penalty_window():
    assert penalty_window(-1, 512) == 512  # the whole context, not llama.cpp's "0 = off"
    assert penalty_window(0, 512) == 0
    assert penalty_window(64, 512) == 64
    assert penalty_window(2**31 - 1, 512) == 512  # never a ring buffer larger than the context


def test_whole_context_look_back_really_penalizes(smollm2):
    """repeat_last_n=-1 used to reach llama.cpp as -1, which it turns into 0: no penalty at all."""
    kw = dict(max_tokens=24, temperature=0, n_ctx=256)
    plain = hk.generate(smollm2, "1 1 1 1 1 1 1 1", **kw).text
    whole = hk.generate(smollm2, "1 1 1 1 1 1 1 1", repeat_penalty=3.0, repeat_last_n=-1, **kw).text
    window = hk.generate(smollm2, "1 1 1 1 1 1 1 1", repeat_penalty=3.0, repeat_last_n=64, **kw).text
    assert whole == window != plain  # 24 tokens: a 64-token window holds them all


def test_library_refuses_long_runs_before_tokenizing(smollm2):
    with pytest.raises(ValueError, match="in a row"):
        smollm2.tokenize("!" * 30_000)
    with pytest.raises(ValueError, match=r"^prompt has a run"):
        hk.generate(smollm2, "x" + "7" * 30_000, max_tokens=1, n_ctx=1024)
    with pytest.raises(ValueError, match=r"^messages has a run"):
        hk.generate(smollm2, messages=[{"role": "user", "content": " " * 30_000}], max_tokens=1, n_ctx=1024)
    with pytest.raises(ValueError, match=r"^prompt has \d+ characters, more than a context of 256"):
        hk.generate(smollm2, "word " * 4000, max_tokens=1, n_ctx=256)
    assert len(smollm2.tokenize("!" * MAX_CLASS_RUN)) > 0
