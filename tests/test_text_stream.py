"""TextStream: UTF-8 safe deltas and stop strings."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hoshikage.generation.text_stream import TextStream


def test_multibyte_character_split_across_tokens():
    s = TextStream()
    data = "星影".encode()
    out = [s.push(data[i:i + 1]) for i in range(len(data))]
    assert out == ["", "", "星", "", "", "影"]


def test_stop_string_split_across_tokens_is_never_emitted():
    s = TextStream(stop=["END"])
    assert s.push(b"abc E") == "abc "
    assert s.push(b"N") == ""
    assert s.push(b"Dxyz") == ""
    assert s.stopped and s.text == "abc "


def test_held_prefix_released_when_it_is_not_a_stop():
    s = TextStream(stop=["END"])
    assert s.push(b"x E") == "x "
    assert s.push(b"lse") == "Else"
    assert s.finish() == ""


def test_invalid_trailing_bytes_become_replacement_on_finish():
    s = TextStream()
    assert s.push(b"a\xe6") == "a"
    assert s.finish() == "\ufffd"


@given(st.text(max_size=50), st.lists(st.integers(1, 6), max_size=30))
def test_deltas_concatenate_to_the_text(text, cuts):
    data, pieces, i = text.encode(), [], 0
    for c in cuts:
        pieces.append(data[i:i + c])
        i += c
    pieces.append(data[i:])
    s = TextStream()
    assert "".join(s.push(p) for p in pieces) + s.finish() == text
