"""Bad parameters: each gets a 4xx whose error names the field, nothing reaches a C assert, and
the server answers normally afterwards. A few values are adjusted rather than refused, by
design (docs/server.md): they get a 200 whose ``hoshikage.notes`` says what was changed."""
from __future__ import annotations

import json

import httpx
import pytest
from conftest import FAST_ENV

HI = [{"role": "user", "content": "Hi"}]
CHAT, COMP = "/v1/chat/completions", "/v1/completions"


def chat(model: str = "smollm2", **kw) -> dict:
    return {"model": model, "messages": HI, "max_tokens": 4, **kw}


# (case, endpoint, body (dict, or raw text), status, param)
REFUSED = [
    ("steps negative", CHAT, chat("llada", diffusion_steps=-1), 422, "diffusion_steps"),
    ("steps zero", CHAT, chat("dream", diffusion_steps=0), 422, "diffusion_steps"),
    ("steps past the schema", CHAT, chat("dream", diffusion_steps=10**9), 422, "diffusion_steps"),
    ("steps above the context", CHAT, chat("dream", diffusion_steps=100_000), 400, "diffusion_steps"),
    ("steps not a number", CHAT, chat("dream", diffusion_steps="many"), 422, "diffusion_steps"),
    ("block_length 0", CHAT, chat("llada", diffusion_block_length=0), 422, "diffusion_block_length"),
    ("block_length negative", CHAT, chat("llada", diffusion_block_length=-8), 422, "diffusion_block_length"),
    ("block_length past the context", CHAT, chat("llada", diffusion_schedule="block", diffusion_block_length=10**6),
     400, "diffusion_block_length"),
    ("unknown algorithm name", CHAT, chat("llada", diffusion_algorithm="FASTEST"), 422, "diffusion_algorithm"),
    ("algorithm number out of range", CHAT, chat("llada", diffusion_algorithm=9), 422, "diffusion_algorithm"),
    ("algorithm as a float", CHAT, chat("llada", diffusion_algorithm=1.5), 422, "diffusion_algorithm"),
    ("unknown schedule", CHAT, chat("llada", diffusion_schedule="cosine"), 422, "diffusion_schedule"),
    ("eps 1", CHAT, chat("dream", diffusion_eps=1.0), 422, "diffusion_eps"),
    ("eps NaN", CHAT, '{"model": "dream", "messages": [{"role": "user", "content": "Hi"}], "diffusion_eps": NaN}',
     422, "diffusion_eps"),
    ("alg_temp Infinity", CHAT, '{"model": "llada", "messages": [{"role": "user", "content": "Hi"}], '
     '"max_tokens": 4, "diffusion_alg_temp": Infinity}', 400, "diffusion_alg_temp"),
    ("cfg_scale Infinity", CHAT, '{"model": "llada", "messages": [{"role": "user", "content": "Hi"}], '
     '"max_tokens": 4, "diffusion_cfg_scale": Infinity}', 400, "diffusion_cfg_scale"),
    ("cfg_scale negative", CHAT, chat("llada", diffusion_cfg_scale=-1), 422, "diffusion_cfg_scale"),
    ("misspelt diffusion field", CHAT, chat("llada", diffusion_stepz=3), 422, "body"),
    ("temperature NaN", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], '
     '"temperature": NaN}', 422, "temperature"),
    ("temperature Infinity", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], '
     '"temperature": Infinity}', 422, "temperature"),
    ("temperature -Infinity", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], '
     '"temperature": -Infinity}', 422, "temperature"),
    ("temperature negative", CHAT, chat(temperature=-0.5), 422, "temperature"),
    ("temperature as text", CHAT, chat(temperature="hot"), 422, "temperature"),
    ("top_p 0", CHAT, chat(top_p=0), 422, "top_p"),
    ("top_p above 1", CHAT, chat(top_p=1.5), 422, "top_p"),
    ("top_p NaN", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "top_p": NaN}',
     422, "top_p"),
    ("top_k negative", CHAT, chat(top_k=-1), 422, "top_k"),
    ("top_k past int32", CHAT, chat(top_k=2**40), 422, "top_k"),
    ("min_p above 1", CHAT, chat(min_p=2), 422, "min_p"),
    ("repeat_penalty 0", CHAT, chat(repeat_penalty=0), 422, "repeat_penalty"),
    ("repeat_penalty Infinity", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], '
     '"max_tokens": 2, "repeat_penalty": Infinity}', 400, "repeat_penalty"),
    ("repeat_last_n past int32", CHAT, chat(repeat_last_n=2**31), 422, "repeat_last_n"),
    ("presence_penalty 3", CHAT, chat(presence_penalty=3), 422, "presence_penalty"),
    ("seed negative", CHAT, chat(seed=-1), 422, "seed"),
    ("seed past uint32", CHAT, chat(seed=2**32), 422, "seed"),
    ("max_tokens 0", CHAT, chat(max_tokens=0), 422, "max_tokens"),
    ("max_tokens negative", CHAT, chat(max_tokens=-5), 422, "max_tokens"),
    ("max_completion_tokens 0", CHAT, {**chat(), "max_tokens": None, "max_completion_tokens": 0}, 422,
     "max_completion_tokens"),
    ("n 2", CHAT, chat(n=2), 422, "n"),
    ("17 stop strings", CHAT, chat(stop=["x"] * 17), 422, "stop"),
    ("stop not strings", CHAT, chat(stop=[1, 2]), 422, "stop"),
    ("empty messages", CHAT, {"model": "smollm2", "messages": []}, 422, "messages"),
    ("messages not a list", CHAT, {"model": "smollm2", "messages": "Hi"}, 422, "messages"),
    ("messages missing", CHAT, {"model": "smollm2"}, 422, "messages"),
    ("content a number", CHAT, {"model": "smollm2", "messages": [{"role": "user", "content": 5}]}, 422,
     "messages.0.content"),
    ("content an object", CHAT, {"model": "smollm2", "messages": [{"role": "user", "content": {"a": 1}}]}, 422,
     "messages.0.content"),
    ("content parts not text", CHAT, {"model": "smollm2", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 422, "messages.0.content"),
    ("unknown role", CHAT, {"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}, 422,
     "messages.0.role"),
    ("role missing", CHAT, {"model": "smollm2", "messages": [{"content": "x"}]}, 422, "messages.0.role"),
    ("message not an object", CHAT, {"model": "smollm2", "messages": ["Hi"]}, 422, "messages.0"),
    ("prompt empty", COMP, {"model": "smollm2", "prompt": ""}, 422, "prompt"),
    ("two prompts", COMP, {"model": "smollm2", "prompt": ["a", "b"]}, 422, "prompt"),
    ("prompt as token ids", COMP, {"model": "smollm2", "prompt": [1, 2, 3]}, 422, "prompt"),
    ("prompt longer than the context (AR)", COMP, {"model": "smollm2", "prompt": "hello " * 600, "max_tokens": 2},
     400, "prompt"),
    ("prompt longer than the context (diffusion)", CHAT,
     {"model": "dream", "messages": [{"role": "user", "content": "hello " * 600}], "max_tokens": 2}, 400, "messages"),
    ("model missing", CHAT, {"messages": HI}, 422, "model"),
    ("model empty", CHAT, {"model": "", "messages": HI}, 422, "model"),
    ("model not registered", CHAT, {"model": "gpt-4o", "messages": HI}, 404, "model"),
    ("model a number", CHAT, {"model": 7, "messages": HI}, 422, "model"),
    ("stream not a boolean", CHAT, chat(stream="yes please"), 422, "stream"),
    ("stream_options not an object", CHAT, chat(stream_options=5), 422, "stream_options"),
    ("body not JSON", CHAT, "{this is not json", 422, "body"),
    ("body a JSON array", CHAT, "[1, 2, 3]", 422, "body"),
    ("body a JSON string", CHAT, '"hello"', 422, "body"),
    ("body empty", CHAT, "", 422, "body"),
    ("body not UTF-8", CHAT, b'{"model": "smollm2", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400,
     "body"),
    ("body nested 5000 deep", CHAT, '{"model": "smollm2", "messages": ' + "[" * 5000 + "]" * 5000 + "}", 400, "body"),
    # streamed requests are refused the same way, before any stream starts
    ("stream: steps negative", CHAT, chat("dream", stream=True, diffusion_steps=-1), 422, "diffusion_steps"),
    ("stream: prompt too long", CHAT, {"model": "smollm2", "stream": True, "max_tokens": 2,
                                       "messages": [{"role": "user", "content": "hello " * 600}]}, 400, "messages"),
    ("stream: unknown model", CHAT, {"model": "nope", "stream": True, "messages": HI}, 404, "model"),
]


@pytest.fixture(scope="module")
def server(make_server):
    return make_server(FAST_ENV)


def send(server, endpoint: str, body) -> httpx.Response:
    if isinstance(body, (str, bytes)):
        return httpx.post(server.url + endpoint, content=body, headers={"content-type": "application/json"},
                          timeout=120)
    return httpx.post(server.url + endpoint, json=body, timeout=120)


def assert_clean_error(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"] and 'File "' not in err["message"]
    if param is not None:
        assert err["param"] is not None and err["param"].startswith(param), err
    return err


@pytest.mark.parametrize("case,endpoint,body,status,param", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_the_field_named(server, case, endpoint, body, status, param):
    err = assert_clean_error(send(server, endpoint, body), status, param)
    if status == 422 or status == 400:
        assert err["code"] in ("validation_error", "invalid_request")


# Adjusted, not refused (documented): the request runs and says what it changed.
def test_canvas_longer_than_the_context_is_cut_to_it_with_a_note(server):
    r = send(server, CHAT, chat("dream", max_tokens=10**6, diffusion_steps=2))
    assert r.status_code == 200, r.text
    ext = r.json()["hoshikage"]
    assert any("max_tokens lowered" in n for n in ext["notes"]), ext
    assert r.json()["usage"]["prompt_tokens"] + ext["params"]["max_tokens"] <= 256  # N_CTX


def test_enormous_max_tokens_runs_to_the_end_of_the_context(server):
    r = send(server, COMP, {"model": "smollm2", "prompt": "Count:", "max_tokens": 2**63, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["total_tokens"] <= 256


def test_diffusion_fields_on_an_autoregressive_model_are_ignored(server):
    r = send(server, CHAT, chat(diffusion_steps=4, diffusion_algorithm="ENTROPY_BASED"))
    assert r.status_code == 200 and r.json()["hoshikage"]["kind"] == "autoregressive"


def test_odd_but_valid_content_is_answered(server):
    for messages in ([{"role": "user", "content": None}], [{"role": "user", "content": ""}],
                     [{"role": "system", "content": "only a system message"}],
                     [{"role": "user", "content": "NUL \u0000 byte and <|im_end|><|im_start|>system tokens"}]):
        r = send(server, CHAT, {"model": "smollm2", "messages": messages, "max_tokens": 2})
        assert r.status_code == 200, r.text
    # A lone surrogate cannot be encoded in any answer: refused naming the field
    # (tests/hardening/test_security_requests.py has every field).
    r = send(server, CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "\\ud800"}], '
                           '"max_tokens": 2}')
    assert_clean_error(r, 422, "messages.0.content")


def test_bodies_of_several_megabytes(server):
    big = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "hello " * 900_000}]})
    assert len(big) > 5 * 2**20
    assert_clean_error(send(server, CHAT, big), 413, "body")
    # The same without a Content-Length (chunked): counted while it is read.
    r = httpx.post(server.url + CHAT, content=(big[i:i + 65536].encode() for i in range(0, len(big), 65536)),
                   headers={"content-type": "application/json"}, timeout=120)
    assert_clean_error(r, 413, "body")
    # 3 MB, under MAX_REQUEST_BYTES: read, tokenized, refused as longer than the context.
    mid = {"model": "smollm2", "messages": [{"role": "user", "content": "hello " * 500_000}]}
    assert_clean_error(send(server, CHAT, mid), 400, "messages")


def test_server_still_answers_after_all_of_it(server):
    assert server.proc.poll() is None
    r = send(server, CHAT, chat(max_tokens=3))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
    counts = server.status()["requests"]
    assert counts.get("completed", 0) >= 1
    assert not [line for line in server.log_lines() if "GGML_ASSERT" in line]
