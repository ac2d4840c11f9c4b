"""generation.settled.SettledText: the settled text of a diffusion canvas, streamed as deltas that add
up to the final answer's text (end-of-generation token, max_tokens, stop strings). A fake model:
token i is the character chr(i), 0 is the mask, 1 the end of generation."""
from __future__ import annotations

import numpy as np

from hoshikage.generation.settled import SettledText
from hoshikage.generation.text_stream import find_stop, partial_stop_suffix

MASK, EOG = 0, 1


class FakeModel:
    mask_token = MASK

    def is_eog(self, tok: int) -> bool:
        return tok == EOG

    def detokenize(self, tokens, remove_special=False, unparse_special=False) -> str:
        return "".join(chr(t) for t in tokens)


def canvas(prompt: str, answer: str) -> np.ndarray:
    """'_' is a mask, '|' the end-of-generation token."""
    code = {"_": MASK, "|": EOG}
    return np.array([ord(c) for c in prompt] + [code.get(c, ord(c)) for c in answer], dtype=np.int32)


def feed(settled: SettledText, prompt: str, steps: list[str]) -> list[str]:
    return [settled.update(canvas(prompt, s)) for s in steps]


def test_text_up_to_the_first_mask_arrives_as_it_settles():
    deltas = feed(SettledText(FakeModel(), 2, ()), "pp", ["ab__cd", "abc_cd", "abcdcd"])
    assert deltas == ["ab", "c", "dcd"]


def test_the_answer_ends_at_the_first_end_of_generation_token():
    settled = SettledText(FakeModel(), 1, ())
    assert feed(settled, "p", ["ab|x_", "ab|xy"]) == ["ab", ""] and settled.done


def test_max_tokens_caps_the_answer():
    settled = SettledText(FakeModel(), 1, (), max_tokens=3)
    assert feed(settled, "p", ["abcde"]) == ["abc"] and settled.done


def test_a_possible_stop_string_is_held_back_and_a_stop_cuts():
    settled = SettledText(FakeModel(), 0, ["END"])
    assert feed(settled, "", ["abE___", "abEN__", "abENDx"]) == ["ab", "", ""]
    assert settled.done and settled.sent == "ab"
    settled = SettledText(FakeModel(), 0, ["END"])
    assert feed(settled, "", ["abE___", "abEx__"]) == ["ab", "Ex"]


def test_deltas_add_up_to_the_final_answer():
    steps = ["________", "he______", "hel_____", "hello,__", "hello, w", "hello, w"]
    settled = SettledText(FakeModel(), 0, [", w"])
    text = "".join(feed(settled, "", steps))
    final = "hello, w"
    cut = find_stop(final, [", w"])
    assert text == final[:cut] == "hello"


def test_stop_helpers():
    assert find_stop("abcab", ["ca", "b"]) == 1 and find_stop("abc", ["x", ""]) is None
    assert partial_stop_suffix("xxEN", ["END"]) == 2 and partial_stop_suffix("xxEN", ["STOP"]) == 0
