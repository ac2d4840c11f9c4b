"""hoshikage.embed: shapes, normalisation, determinism, validation before C, and agreement with
llama.cpp (its per-token hidden states averaged by hand; llama-embedding when it was built)."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

import hoshikage as hk
from hoshikage import Context, GenerationCancelled
from hoshikage.context import POOLING_MEAN, POOLING_NONE
from hoshikage.embeddings import embed_tokens, embedding_context, l2_normalize, prepare_inputs

TEXTS = ["Hello world", "The sky is blue because of Rayleigh scattering.", "def f(x):\n    return x * 2"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_shape_dtype_and_unit_length(smollm2):
    vectors = hk.embed(smollm2, TEXTS, n_threads=1)
    assert vectors.shape == (len(TEXTS), smollm2.n_embd) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert hk.embed(smollm2, "Hello world", n_threads=1).shape == (1, smollm2.n_embd)
    # Different texts give different directions; the same text the same one.
    assert cosine(vectors[0], vectors[1]) < 0.999


def test_deterministic_and_independent_of_the_batch(smollm2):
    once = hk.embed(smollm2, TEXTS, n_threads=1)
    again = hk.embed(smollm2, TEXTS, n_threads=1)
    assert np.array_equal(once, again)
    alone = hk.embed(smollm2, TEXTS[1], n_threads=1)[0]
    np.testing.assert_allclose(alone, once[1], atol=1e-6)


def test_token_ids_equal_text(smollm2):
    ids = [smollm2.tokenize(t, add_special=True, parse_special=True) for t in TEXTS]
    np.testing.assert_allclose(hk.embed(smollm2, ids, n_threads=1), hk.embed(smollm2, TEXTS, n_threads=1),
                               atol=1e-6)
    np.testing.assert_allclose(hk.embed(smollm2, ids[0], n_threads=1)[0],  # one input as a flat id list
                               hk.embed(smollm2, TEXTS[0], n_threads=1)[0], atol=1e-6)


def test_unnormalised_vectors_are_the_pooled_hidden_states(smollm2):
    raw = hk.embed(smollm2, TEXTS, normalize=False, n_threads=1)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    unit = hk.embed(smollm2, TEXTS, n_threads=1)
    np.testing.assert_allclose(np.stack([l2_normalize(r) for r in raw]), unit, atol=1e-6)
    assert not l2_normalize(np.zeros(4, np.float32)).any()  # as common_embd_normalize: zero stays zero


def test_mean_pooling_equals_the_mean_of_llama_cpp_token_embeddings(smollm2):
    """SmolLM2's GGUF declares no pooling: llama.cpp's MEAN pooling, checked against the per-token
    embeddings (pooling NONE) of the same tokens averaged here, then L2-normalised."""
    with embedding_context(smollm2, 64, n_threads=1) as ctx:
        assert ctx.pooling_type == POOLING_MEAN
        pooled = embed_tokens(ctx, prepare_inputs(smollm2, TEXTS))
    with Context(smollm2, n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1, embeddings=True,
                 pooling_type=POOLING_NONE) as ctx:
        assert ctx.pooling_type == POOLING_NONE
        by_hand = []
        for toks in prepare_inputs(smollm2, TEXTS):
            ctx.clear_memory()
            ctx.decode(toks, logits="all", pos=0)
            rows = np.stack([ctx.embeddings_ith(i) for i in range(len(toks))]).astype(np.float64)
            by_hand.append(l2_normalize(rows.mean(axis=0)))
    assert cosine(pooled, np.stack(by_hand)).min() >= 0.9999
    np.testing.assert_allclose(pooled, np.stack(by_hand), atol=1e-5)


def _llama_embedding(native_build) -> str | None:
    return native_build.tools.get("llama-embedding") or os.environ.get("HOSHIKAGE_LLAMA_EMBEDDING")


def test_agrees_with_llama_embedding(smollm2, native_build):
    """llama.cpp's own tool with the same pooling (mean) and normalisation (L2, its default)."""
    tool = _llama_embedding(native_build)
    if tool is None:
        pytest.skip("llama-embedding is not in the build manifest (set HOSHIKAGE_LLAMA_EMBEDDING to one "
                    "built from the same source); test_mean_pooling_equals_... checks the pooling by hand")
    ref = []
    for text in TEXTS:
        out = subprocess.run([tool, "-m", str(smollm2.path), "-p", text, "--pooling", "mean", "--embd-separator",
                              "<#SEP#>", "--embd-output-format", "json", "-t", "1", "-c", "256"],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        ref.append(json.loads(out)["data"][0]["embedding"])
    assert cosine(hk.embed(smollm2, TEXTS, n_threads=1), np.array(ref)).min() >= 0.9999


@pytest.mark.parametrize("inputs, words", [
    ([5, 10**9], ["input[1] = 1000000000", "vocabulary"]),
    ([[1, 2], [3, -1]], ["input[1][1] = -1"]),
    ([[1, 2], ["x"]], ["input[1][0]", "token id"]),
    (["ok", 7], ["input[1]", "string or a list"]),
    ([], ["empty list"]),
    ("", ["input is an empty string"]),
    (["fine", ""], ["input[1] is an empty string"]),
    ([[1], []], ["input[1] is an empty token list"]),
    ([True, False], ["input[0]", "string or a list"]),
    (3.5, ["input must be a string or a list"]),
])
def test_bad_inputs_are_clear_value_errors(smollm2, inputs, words):
    with pytest.raises(ValueError) as info:
        hk.embed(smollm2, inputs, n_threads=1)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_a_given_context_is_reused_and_bounds_the_input(smollm2):
    with embedding_context(smollm2, 64, n_threads=1) as ctx:
        assert ctx.n_ubatch == ctx.n_batch == 64
        first = hk.embed(smollm2, TEXTS, context=ctx)
        np.testing.assert_allclose(hk.embed(smollm2, TEXTS, context=ctx), first, atol=1e-6)
        with pytest.raises(ValueError, match=r"input\[1\] has 65 tokens; an input needs 1 to 64"):
            hk.embed(smollm2, [[1], [2] * 65], context=ctx)
        with pytest.raises(GenerationCancelled, match="after 0 of 3"):
            hk.embed(smollm2, TEXTS, context=ctx, should_stop=lambda: True)
        np.testing.assert_allclose(hk.embed(smollm2, TEXTS, context=ctx), first, atol=1e-6)  # still usable
    with Context(smollm2, n_ctx=64, n_threads=1) as plain, pytest.raises(ValueError, match="embeddings=True"):
        hk.embed(smollm2, "x", context=plain)


def test_a_diffusion_model_cannot_embed():
    from hoshikage.testing.diffusion_models import ensure_test_model

    with hk.Model(ensure_test_model("llada-tiny")) as llada:
        with pytest.raises(ValueError, match="diffusion model"):
            hk.embed(llada, "Hello")
