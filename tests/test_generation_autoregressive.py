"""Autoregressive generation on SmolLM2, against llama.cpp's own llama-simple."""
from __future__ import annotations

import subprocess

import pytest

import hoshikage as hk

PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a land far away,",
    "def fibonacci(n):",
    "東京は日本の首都で、",
    "Émile a écrit: «",
]


def llama_simple_continuation(tool, model, prompt: str, n: int) -> str:
    """What llama-simple prints after echoing the prompt (it echoes the prompt's pieces first)."""
    out = subprocess.run([tool("llama-simple"), "-m", str(model.path), "-n", str(n), prompt],
                         capture_output=True, timeout=120, check=True).stdout
    echoed = b"".join(model.token_to_piece(t, special=True)
                      for t in model.tokenize(prompt, add_special=True, parse_special=True))
    assert out.startswith(echoed), (out[:80], echoed[:80])
    return out[len(echoed):].decode("utf-8", "replace").removesuffix("\n")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_llama_simple(smollm2, tool, prompt):
    expected = llama_simple_continuation(tool, smollm2, prompt, 32)
    got = hk.generate(smollm2, prompt, max_tokens=32, temperature=0)
    assert got.text == expected


def test_streaming_deltas_concatenate_to_one_shot(smollm2):
    kwargs = dict(max_tokens=40, temperature=0.7, seed=123)
    one_shot = hk.generate(smollm2, "Tell me about the sea.", **kwargs)
    chunks = list(hk.generate(smollm2, "Tell me about the sea.", stream=True, **kwargs))
    assert "".join(c.text for c in chunks) == one_shot.text
    assert chunks[-1].finish_reason == one_shot.finish_reason
    assert chunks[-1].completion.tokens == one_shot.tokens


def test_same_seed_same_text_different_seed_differs(smollm2):
    a = hk.generate(smollm2, "A poem about rain:", max_tokens=30, temperature=1.0, seed=7)
    b = hk.generate(smollm2, "A poem about rain:", max_tokens=30, temperature=1.0, seed=7)
    c = hk.generate(smollm2, "A poem about rain:", max_tokens=30, temperature=1.0, seed=8)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_random_seed_is_reported_and_reproduces(smollm2):
    a = hk.generate(smollm2, "Colors:", max_tokens=20, temperature=1.0)
    b = hk.generate(smollm2, "Colors:", max_tokens=20, temperature=1.0, seed=a.params["seed"])
    assert a.tokens == b.tokens


def test_length_and_usage(smollm2):
    out = hk.generate(smollm2, "Count: 1, 2, 3,", max_tokens=8, temperature=0)
    assert out.finish_reason == "length"
    assert out.usage == {"prompt_tokens": out.prompt_tokens, "completion_tokens": 8,
                         "total_tokens": out.prompt_tokens + 8}


def test_stop_sequence_ends_the_answer(smollm2):
    full = hk.generate(smollm2, "Count: 1, 2, 3,", max_tokens=20, temperature=0).text
    stop = full.strip()[2:5]
    out = hk.generate(smollm2, "Count: 1, 2, 3,", max_tokens=20, temperature=0, stop=[stop])
    assert out.finish_reason == "stop"
    assert stop not in out.text and full.startswith(out.text)


def test_chat_answer_ends_with_end_of_turn(smollm2):
    out = hk.generate(smollm2, messages=[{"role": "user", "content": "What is 2+2?"}],
                      max_tokens=100, temperature=0)
    assert out.finish_reason == "stop"
    assert "4" in out.text and "<|im_end|>" not in out.text


def test_cancel_stops_generation(smollm2):
    calls = []
    out = hk.generate(smollm2, "Go on and on:", max_tokens=100, temperature=0,
                      should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert out.finish_reason == "cancelled" and len(out.tokens) == 3


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -3}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": -1}, "seed"),
    ({"repeat_penalty": 0}, "repeat_penalty"),
])
def test_bad_parameters_name_the_field(smollm2, kwargs, field):
    with pytest.raises(ValueError, match=field):
        hk.generate(smollm2, "x", **{"max_tokens": 4, **kwargs})


def test_prompt_longer_than_context(smollm2):
    with pytest.raises(ValueError, match="does not fit"):
        hk.generate(smollm2, "word " * 400, max_tokens=4, n_ctx=256)


def test_diffusion_parameters_on_an_autoregressive_model(smollm2):
    with pytest.raises(ValueError, match="autoregressive"):
        hk.generate(smollm2, "x", max_tokens=4, diffusion={"steps": 8})


def test_repeat_penalty_changes_greedy_output(smollm2):
    prompt = "la la la la la la la la"
    plain = hk.generate(smollm2, prompt, max_tokens=16, temperature=0)
    penalised = hk.generate(smollm2, prompt, max_tokens=16, temperature=0, repeat_penalty=1.5, repeat_last_n=64)
    assert plain.tokens != penalised.tokens
