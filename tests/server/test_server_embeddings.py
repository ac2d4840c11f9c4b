"""POST /v1/embeddings against a live server: the openai SDK (float and base64), token-id inputs,
the bounds and errors naming their field, the shared worker (load on demand, idle unload)."""
from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from in_process import URL, in_process_server

import hoshikage as hk

TEXTS = ["Hello world", "The sky is blue because of Rayleigh scattering."]


@pytest.fixture(scope="module")
def server(make_server):
    return make_server({"N_CTX": "256", "EMBEDDING_MAX_INPUTS": "4", "EMBEDDING_MAX_TOKENS": "300",
                        "REQUEST_TIMEOUT": "60"})


@pytest.fixture(scope="module")
def reference(smollm2) -> np.ndarray:
    """The library's vectors for TEXTS (the library itself is checked against llama.cpp)."""
    return hk.embed(smollm2, TEXTS, n_threads=1)


def error_of(r: httpx.Response, status: int, param: str, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["param"] == param, err
    for word in words:
        assert word in err["message"], (word, err["message"])
    return err


def test_openai_sdk_float(server, reference):
    r = server.openai().embeddings.create(model="smollm2", input=TEXTS, encoding_format="float")
    assert r.object == "list" and r.model == "smollm2" and [d.index for d in r.data] == [0, 1]
    got = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert r.usage.prompt_tokens == r.usage.total_tokens > len(TEXTS)
    assert r.model_extra["hoshikage"]["pooling"] == "mean"


def test_openai_sdk_base64_default(server, reference):
    """The SDK asks for base64 when no encoding_format is given, and decodes it itself."""
    client = server.openai()
    r = client.embeddings.create(model="smollm2", input=TEXTS[0])
    np.testing.assert_allclose(np.array(r.data[0].embedding, dtype=np.float32), reference[0], atol=1e-6)
    raw = server.post("/v1/embeddings", {"model": "smollm2", "input": TEXTS, "encoding_format": "base64"})
    assert raw.status_code == 200, raw.text
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw.json()["data"]]
    np.testing.assert_allclose(np.stack(decoded), reference, atol=1e-6)


def test_token_ids_as_langchain_sends_them(server, smollm2, reference):
    ids = [smollm2.tokenize(t, add_special=True, parse_special=True) for t in TEXTS]
    r = server.openai().embeddings.create(model="smollm2", input=ids, encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in r.data]), reference, atol=1e-5)
    assert r.usage.prompt_tokens == sum(map(len, ids))
    flat = server.post("/v1/embeddings", {"model": "smollm2", "input": ids[0]})  # one input as a flat list
    assert flat.status_code == 200 and len(flat.json()["data"]) == 1
    np.testing.assert_allclose(flat.json()["data"][0]["embedding"], reference[0], atol=1e-5)


def test_dimensions_equal_to_the_model_is_accepted_others_refused(server, smollm2):
    r = server.post("/v1/embeddings", {"model": "smollm2", "input": "x", "dimensions": smollm2.n_embd})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == smollm2.n_embd
    error_of(server.post("/v1/embeddings", {"model": "smollm2", "input": "x", "dimensions": 64}), 400,
             "dimensions", "dimensions=64", str(smollm2.n_embd))


@pytest.mark.parametrize("body, status, param, words", [
    ({"input": [[1, 10**6]]}, 400, "input", ["input[0][1] = 1000000", "vocabulary", "check_embedding_ctx_length"]),
    ({"input": [[1, -3]]}, 422, "input", ["input[0][1] = -3"]),
    ({"input": [[1], "text"]}, 422, "input", ["input[1]", "one kind"]),
    ({"input": ["fine", ""]}, 422, "input", ["input[1] is empty"]),
    ({"input": []}, 422, "input", ["non-empty"]),
    ({"input": [True, 2]}, 422, "input", ["input[0]"]),
    ({"input": ["a", "b", "c", "d", "e"]}, 400, "input", ["5 items", "EMBEDDING_MAX_INPUTS=4"]),
    ({"input": [[7] * 200, [7] * 200]}, 400, "input", ["400 tokens", "EMBEDDING_MAX_TOKENS=300"]),
    ({"input": ["word " * 160, "word " * 160]}, 400, "input", ["EMBEDDING_MAX_TOKENS=300"]),
    ({"input": ["word " * 270]}, 400, "input", ["input[0] has", "context of 256"]),
    ({"input": "x", "encoding_format": "int8"}, 422, "encoding_format", ["float", "base64"]),
    ({"input": "x", "dimensions": 0}, 422, "dimensions", []),
])
def test_bad_requests_name_their_field(server, body, status, param, words):
    error_of(server.post("/v1/embeddings", {"model": "smollm2", **body}), status, param, *words)


def test_a_lone_surrogate_is_refused(server):
    for text in ('"\\ud800"', '["ok", "x\\udfff"]'):
        r = httpx.post(server.url + "/v1/embeddings", content=f'{{"model": "smollm2", "input": {text}}}',
                       headers={"Content-Type": "application/json"}, timeout=60)
        error_of(r, 422, "input", "surrogate")


def test_models_that_cannot_embed(server):
    for name in ("llada", "dream"):
        error_of(server.post("/v1/embeddings", {"model": name, "input": "Hello"}), 400, "model",
                 name, "diffusion model")
    error_of(server.post("/v1/embeddings", {"model": "nope", "input": "Hello"}), 404, "model", "nope")
    # The server is fine afterwards, and embeds again (loading SmolLM2 back).
    assert server.post("/v1/embeddings", {"model": "smollm2", "input": "Hello"}).status_code == 200


def test_shares_the_worker_and_the_residency_with_generation(server):
    r = server.post("/v1/embeddings", {"model": "smollm2", "input": TEXTS})
    assert r.status_code == 200
    status = server.status()
    assert status["loaded_model"] == "smollm2" and status["context"]["kind"] == "embedding"
    chat = server.post("/v1/chat/completions", {"model": "smollm2", "max_tokens": 2,
                                                "messages": [{"role": "user", "content": "Hi"}]})
    assert chat.status_code == 200, chat.text
    assert server.status()["context"]["kind"] == "autoregressive"  # one context at a time
    again = server.post("/v1/embeddings", {"model": "smollm2", "input": TEXTS})
    np.testing.assert_allclose([d["embedding"] for d in again.json()["data"]],
                               [d["embedding"] for d in r.json()["data"]], atol=1e-6)
    assert any("kind=embedding inputs=2" in line for line in server.log_lines())


def test_idle_unload_frees_the_embeddings_context(make_server):
    quick = make_server({"N_CTX": "256", "IDLE_TIMEOUT": "1"})
    assert quick.post("/v1/embeddings", {"model": "smollm2", "input": "Hello"}).status_code == 200
    status = quick.wait_status(lambda s: s["loaded_model"] is None, timeout=30)
    assert status["context"] is None and status["unloads"] >= 1
    assert quick.post("/v1/embeddings", {"model": "smollm2", "input": "Hello"}).status_code == 200  # loads again


def test_api_key_guards_embeddings(tmp_path, smollm2_path):
    """In process (in_process.py): the key and CORS are the app's; a stub runner answers."""
    with in_process_server(tmp_path, {"smollm2": Path(smollm2_path)}, api_key="k-1") as keyed:
        r = keyed.post("/v1/embeddings", json={"model": "smollm2", "input": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        sdk = openai.OpenAI(base_url=URL + "/v1", api_key="k-1", max_retries=0, http_client=keyed)
        assert sdk.embeddings.create(model="smollm2", input="x").data[0].embedding
        # A browser's preflight carries no key and is answered; the request itself still needs the key.
        origin = {"Origin": "http://localhost:5173"}
        pre = keyed.options("/v1/embeddings", headers={**origin, "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin["Origin"]
        r = keyed.post("/v1/embeddings", json={"model": "smollm2", "input": "x"}, headers=origin)
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == origin["Origin"]
        r = keyed.post("/v1/embeddings", json={"model": "smollm2", "input": "x"},
                       headers={**origin, "Authorization": "Bearer k-1"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin["Origin"]
