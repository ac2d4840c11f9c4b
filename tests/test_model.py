"""Model: loading, metadata, tokenizer, chat template, lifetime — on the real SmolLM2."""
from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoshikage import ClosedError, Model, ModelLoadError


def test_metadata_of_smollm2(smollm2):
    assert smollm2.arch == "llama"
    assert smollm2.n_vocab == 49152
    assert smollm2.n_ctx_train > 0
    assert not smollm2.is_diffusion
    assert smollm2.metadata["general.architecture"] == "llama"
    assert smollm2.mask_token is None
    assert "<|im_start|>" in smollm2.chat_template
    assert smollm2.is_eog(smollm2.eos_token)


@pytest.mark.parametrize("name, content, message", [
    ("missing.gguf", None, "not found"),
    (".", None, "directory"),
    ("empty.gguf", b"", "empty or truncated"),
    ("bad.gguf", b"PK\x03\x04rest", "not a GGUF"),
])
def test_bad_paths_raise_before_reaching_c(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        Model(path)


def test_truncated_gguf_is_a_load_error(tmp_path, smollm2_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_path.read_bytes()[: 1 << 20])
    with pytest.raises(ModelLoadError, match="could not load|corrupt GGUF"):
        Model(cut)


def test_close_twice_and_use_after_close(smollm2_path):
    model = Model(smollm2_path, vocab_only=True)
    model.close()
    model.close()
    with pytest.raises(ClosedError):
        model.tokenize("hi")


def test_tokenize_known_text(smollm2):
    toks = smollm2.tokenize("Hello world", add_special=False)
    assert len(toks) == 2
    assert smollm2.detokenize(toks) == "Hello world"


def test_special_tokens_are_parsed_only_when_asked(smollm2):
    plain = smollm2.tokenize("<|im_start|>", add_special=False)
    parsed = smollm2.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(parsed) == 1 and len(plain) > 1


def test_out_of_range_token_is_a_value_error(smollm2):
    with pytest.raises(ValueError, match="out of range"):
        smollm2.detokenize([smollm2.n_vocab])


# SmolLM2's byte-level vocabulary lacks the bytes 0x04 0x06 0x13 0x14 0x16 0x1D and the UTF-8
# lead bytes 0xF1-0xF4 (code points from plane 4 up): text with those cannot be represented by
# this model at all. Everything else must round-trip.
UNREPRESENTABLE = "".join(map(chr, (4, 6, 19, 20, 22, 29)))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=UNREPRESENTABLE,
                                      max_codepoint=0x3FFFF), max_size=200))
def test_tokenize_detokenize_round_trip(smollm2, text):
    assert smollm2.detokenize(smollm2.tokenize(text, add_special=False)) == text


def test_chat_template_matches_llama_cpp_engine(smollm2):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "こんにちは"}]
    expected = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nこんにちは<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert smollm2.apply_chat_template(messages, engine="builtin") == expected
    assert smollm2.apply_chat_template(messages) == expected


def test_jinja_fallback_renders_an_unknown_template(smollm2):
    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[bot]{% endif %}"
    out = smollm2.apply_chat_template([{"role": "user", "content": "x"}], template=template)
    assert out == "[user]x[bot]"


def test_bad_messages_name_the_field(smollm2):
    with pytest.raises(ValueError, match=r"messages\[0\]\.role"):
        smollm2.apply_chat_template([{"role": "wizard", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[1\]\.content"):
        smollm2.apply_chat_template([{"role": "user", "content": "x"}, {"role": "user", "content": 3}])


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_load_free_cycles_do_not_grow_rss(smollm2_path):
    from hoshikage import Context

    def cycle():
        with Model(smollm2_path) as model, Context(model, n_ctx=256) as ctx:
            ctx.decode(model.tokenize("warm up"), logits="last")

    for _ in range(5):
        cycle()
    gc.collect()
    before = _rss_kb()
    for _ in range(100):
        cycle()
    gc.collect()
    grown_mb = (_rss_kb() - before) / 1024
    assert grown_mb < 20, f"RSS grew by {grown_mb:.1f} MB over 100 load/free cycles"
