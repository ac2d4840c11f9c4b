"""Embeddings: one vector per input, pooled and L2-normalised as llama.cpp's embedding path does it.

    import hoshikage as hk
    with hk.Model(hk.smollm2_path()) as model:
        vectors = hk.embed(model, ["first text", "second text"])  # [2, n_embd_out] float32

How, through llama.h (as ``llama-embedding`` and ``llama-server --embeddings`` do):

- A Context made with ``embeddings=True``; llama.cpp then outputs every token of a batch.
- Pooling: the model's own (``<arch>.pooling_type`` in the GGUF: mean, cls or last, picked by
  llama.cpp itself through LLAMA_POOLING_TYPE_UNSPECIFIED). A model without one (a causal LM such
  as SmolLM2) gets MEAN, llama.cpp's own mean pooling — what ``--pooling mean`` gives both tools.
  (Left to its default, llama-embedding would print one vector per token and llama-server's
  /v1/embeddings refuses with "Pooling type 'none' is not OAI compatible".) RANK (rerankers)
  gives scores, not embeddings, and is refused.
- Each input is decoded alone as sequence 0, the memory cleared before it, in one ubatch (a pooled
  embedding is only whole when the sequence is in one ubatch); ``llama_get_embeddings_seq`` reads it.
- ``common_embd_normalize(..., 2)``: divided by its Euclidean norm (a zero vector stays zero).

Text is tokenized as both tools do (special tokens added and parsed); token-id inputs are used
as given. Everything is validated before llama.cpp sees it (ValueError naming ``input[i]``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import numpy as np

from .context import (POOLING_CLS, POOLING_LAST, POOLING_MEAN, POOLING_NONE, POOLING_RANK, POOLING_TYPES,
                      POOLING_UNSPECIFIED, Context)
from .errors import GenerationCancelled
from .model import Model

Inputs = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]]]
MIN_CONTEXT = 64  # smallest embeddings context embed() makes (tokens)


def model_pooling(model: Model) -> int:
    """The pooling type the model's GGUF declares (``<arch>.pooling_type``), POOLING_NONE if none."""
    value = model.meta(f"{model.arch}.pooling_type")
    try:
        pooling = int(value) if value is not None else POOLING_NONE
    except ValueError:
        return POOLING_NONE
    return pooling if pooling in POOLING_TYPES else POOLING_NONE


def check_can_embed(model: Model) -> None:
    """ValueError saying why ``model`` cannot give embeddings (diffusion, encoder-decoder, reranker)."""
    lib = model._lib
    if model.is_diffusion:
        raise ValueError(f"model {model.path.name} is a diffusion model ({model.arch}); embeddings need an "
                         "autoregressive or encoder model")
    if lib.llama_model_has_encoder(model.ptr) and lib.llama_model_has_decoder(model.ptr):
        raise ValueError(f"model {model.path.name} is an encoder-decoder model ({model.arch}); llama.cpp "
                         "computes no embeddings for those")
    if model_pooling(model) == POOLING_RANK:
        raise ValueError(f"model {model.path.name} is a reranker (pooling 'rank'): it gives relevance scores, "
                         "not embeddings")


def embedding_width(model: Model) -> int:
    """Length of one embedding (``llama_model_n_embd_out``; n_embd for most models)."""
    return int(model._lib.llama_model_n_embd_out(model.ptr))


def pooling_request(model: Model) -> int:
    """What to ask llama.cpp for: UNSPECIFIED when the GGUF names a pooling (llama.cpp applies it),
    else MEAN."""
    return POOLING_UNSPECIFIED if model_pooling(model) in (POOLING_MEAN, POOLING_CLS, POOLING_LAST) else POOLING_MEAN


def embedding_context(model: Model, size: int, *, n_threads: int | None = None) -> Context:
    """An embeddings Context for inputs of up to ``size`` tokens, each in one ubatch
    (n_batch = n_ubatch = size; llama.cpp may pad n_ctx above it).

    Memory: besides the hidden states, llama.cpp computes logits for every token of a causal LM
    (about 2 x size x n_vocab x 4 bytes: the output buffer and the compute graph's tensor)."""
    check_can_embed(model)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    ctx = Context(model, n_ctx=size, n_batch=size, n_ubatch=size, n_threads=n_threads,
                  embeddings=True, pooling_type=pooling_request(model))
    if ctx.pooling_type in (POOLING_NONE, POOLING_RANK):  # cannot happen with the request above
        ctx.close()
        raise ValueError(f"llama.cpp chose pooling '{POOLING_TYPES[ctx.pooling_type]}' for {model.path.name}")
    return ctx


def prepare_inputs(model: Model, inputs: Inputs) -> list[list[int]]:
    """The token ids of each input: a string, a list of strings, a list of token ids, or a list of
    lists of token ids. ValueError naming ``input`` / ``input[i]``: empty inputs, ids outside the
    vocabulary, mixed kinds, or text the tokenizer refuses."""
    if not isinstance(inputs, (str, list, tuple, np.ndarray)):
        raise ValueError(f"input must be a string or a list, got {type(inputs).__name__}")
    if not isinstance(inputs, str) and len(inputs) == 0:
        raise ValueError("input is an empty list; give at least one string or token list")
    n_vocab = model.n_vocab
    if isinstance(inputs, str) or all(_is_token(t) for t in inputs):  # one text, or one input's token ids
        return [_tokens_of(model, inputs, "input", n_vocab)]
    return [_tokens_of(model, item, f"input[{i}]", n_vocab) for i, item in enumerate(inputs)]


def _is_token(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _tokens_of(model: Model, item: object, name: str, n_vocab: int) -> list[int]:
    if isinstance(item, str):
        if not item:
            raise ValueError(f"{name} is an empty string")
        try:
            tokens = model.tokenize(item, add_special=True, parse_special=True)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if not tokens:
            raise ValueError(f"{name} has no tokens")
        return tokens
    if isinstance(item, (list, tuple, np.ndarray)):
        tokens = list(item)
        if not tokens:
            raise ValueError(f"{name} is an empty token list")
        for j, tok in enumerate(tokens):
            if not _is_token(tok):
                raise ValueError(f"{name}[{j}] must be a token id (an int), got {tok!r}")
            if not 0 <= int(tok) < n_vocab:
                raise ValueError(f"{name}[{j}] = {int(tok)} is not a token id of this model's vocabulary "
                                 f"[0, {n_vocab})")
        return [int(t) for t in tokens]
    raise ValueError(f"{name} must be a string or a list of token ids, got {type(item).__name__}")


def embed_tokens(context: Context, token_lists: Sequence[Sequence[int]], *, normalize: bool = True,
                 should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Pooled embeddings of already-validated token lists: ``[len(token_lists), n_embd_out]`` float32.

    Each list is decoded alone (memory cleared first) and must fit the context's ubatch.
    ``should_stop`` is asked before each input; True raises GenerationCancelled.
    """
    if not context.embeddings:
        raise ValueError("the context was made without embeddings=True (use embedding_context())")
    limit = context.n_ubatch
    for i, toks in enumerate(token_lists):
        if not 0 < len(toks) <= limit:
            raise ValueError(f"input[{i}] has {len(toks)} tokens; an input needs 1 to {limit} "
                             "(the embeddings context)")
    out = np.zeros((len(token_lists), context.n_embd_out), dtype=np.float32)
    for i, toks in enumerate(token_lists):
        if should_stop is not None and should_stop():
            raise GenerationCancelled(f"stopped after {i} of {len(token_lists)} inputs")
        context.clear_memory()
        context.decode(toks, logits="all", pos=0)
        vector = context.embeddings_seq(0)
        out[i] = l2_normalize(vector) if normalize else vector
    context.clear_memory()
    return out


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    """``common_embd_normalize(v, out, n, 2)``: v / ||v||_2, summed in double; a zero vector stays zero."""
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.sqrt(np.dot(v, v)))
    return (v * (1.0 / norm if norm > 0 else 0.0)).astype(np.float32)


def embed(model: Model, inputs: Inputs, *, normalize: bool = True, context: Context | None = None,
          n_threads: int | None = None, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """Embeddings of ``inputs`` (see prepare_inputs): ``[n_inputs, n_embd_out]`` float32, each row of
    unit Euclidean length unless ``normalize=False``.

    ``context``: an embeddings Context to use (see embedding_context); by default one sized to the
    longest input is made and closed again. ValueError for bad inputs or a model that cannot embed.
    """
    check_can_embed(model)
    token_lists = prepare_inputs(model, inputs)
    if context is not None:
        return embed_tokens(context, token_lists, normalize=normalize, should_stop=should_stop)
    longest = max(len(t) for t in token_lists)
    if longest > model.n_ctx_train > 0:
        i = next(i for i, t in enumerate(token_lists) if len(t) == longest)
        raise ValueError(f"input[{i}] has {longest} tokens, more than the model's training context "
                         f"({model.n_ctx_train})")
    size = max(MIN_CONTEXT, 1 << (longest - 1).bit_length())  # a power of two, as the server's buckets
    if model.n_ctx_train > 0:
        size = min(size, max(longest, model.n_ctx_train))
    with embedding_context(model, size, n_threads=n_threads) as ctx:
        return embed_tokens(ctx, token_lists, normalize=normalize, should_stop=should_stop)
