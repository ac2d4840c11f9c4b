"""Context: one ``llama_context`` — decode token batches, read logits as numpy arrays.

Ownership: a Context holds a reference to its Model, so the model outlives it, and the model
tracks its open contexts (weakly): ``Model.close()`` closes them first, so a context used
after its model was closed raises ClosedError. ``close()`` frees the context (idempotent). Logits come back as ``[n_outputs, n_vocab]`` float32:
``logits_view()`` is zero-copy into llama.cpp's buffer and valid only until the next decode
or close; ``logits()`` is a copy. A context made with ``embeddings=True`` also keeps the
hidden states: ``embeddings_seq()`` (pooled) and ``embeddings_ith()`` (one token), copies of
``[n_embd_out]`` float32 (``hoshikage.embeddings`` builds on them).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _ffi
from .devices import checked_lib
from .errors import ClosedError, ContextError, check_decode
from .model import Model


# Prompts are decoded in chunks aligned to multiples of this many positions, so that a cached
# prefix can be reused bit-exactly (see Context.reuse_prefix).
PROMPT_CHUNK = 64


def default_threads() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# enum llama_pooling_type (llama.h)
POOLING_UNSPECIFIED, POOLING_NONE, POOLING_MEAN, POOLING_CLS, POOLING_LAST, POOLING_RANK = -1, 0, 1, 2, 3, 4
POOLING_TYPES = {POOLING_UNSPECIFIED: "unspecified", POOLING_NONE: "none", POOLING_MEAN: "mean",
                 POOLING_CLS: "cls", POOLING_LAST: "last", POOLING_RANK: "rank"}


class Context:
    """An inference context over ``model``.

    Args:
        n_ctx: context length in tokens (0 = the model's training length).
        n_batch: most tokens one decode call may submit (default: n_ctx, at most 2048).
        n_ubatch: physical batch; a diffusion canvas must fit one ubatch (default: n_batch).
        n_threads: threads for generation; n_threads_batch for prompt/batch work
            (default: the CPUs available).
        embeddings: keep the output embeddings (llama_context_params.embeddings); llama.cpp then
            outputs every token of a batch.
        pooling_type: a llama_pooling_type (POOLING_* here); None lets llama.cpp take the model's
            own (UNSPECIFIED: the GGUF's ``<arch>.pooling_type``, else NONE).
    """

    def __init__(self, model: Model, *, n_ctx: int = 2048, n_batch: int | None = None,
                 n_ubatch: int | None = None, n_threads: int | None = None,
                 n_threads_batch: int | None = None, embeddings: bool = False,
                 pooling_type: int | None = None):
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch),
                            ("n_threads", n_threads), ("n_threads_batch", n_threads_batch)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if n_ctx == 0:
            n_ctx = model.n_ctx_train
        n_batch = n_batch or min(n_ctx, 2048)
        n_ubatch = n_ubatch or n_batch
        if pooling_type is not None and pooling_type not in POOLING_TYPES:
            raise ValueError(f"pooling_type must be one of {sorted(POOLING_TYPES)} (llama_pooling_type), "
                             f"got {pooling_type!r}")
        if n_ubatch > n_batch:
            raise ValueError(f"n_ubatch ({n_ubatch}) must not exceed n_batch ({n_batch})")
        n_threads = n_threads or default_threads()
        n_threads_batch = n_threads_batch or n_threads

        lib = _ffi.lib()
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        params.n_seq_max = 1
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.no_perf = True
        params.embeddings = bool(embeddings)
        if pooling_type is not None:
            params.pooling_type = pooling_type
        ptr = lib.llama_init_from_model(model.ptr, params)
        if ptr == _ffi.NULL:
            raise ContextError(
                f"llama.cpp could not create a context (n_ctx={n_ctx}, n_batch={n_batch}, "
                f"n_ubatch={n_ubatch}) for {model.path.name}: most likely out of memory")
        self.model = model  # keeps the model alive as long as this context
        self._lib = checked_lib(lib, model)  # on RPC servers: each decode checks their connections first
        self._ptr = ptr
        model._adopt(self)  # model.close() closes this context first
        self._n_vocab = model.n_vocab
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch
        self.n_past = 0
        # The tokens whose KV is cached at positions 0..n_past-1, or None when unknown (a decode
        # at explicit positions); reuse_prefix() trusts it only when known. _aligned: how many of
        # them were decoded as whole PROMPT_CHUNK-aligned chunks by decode_prompt (reusable).
        self._history: list[int] | None = []
        self._aligned = 0
        self._n_outputs = 0
        self._causal = True
        self.embeddings = bool(embeddings)
        self._batch_capacity = int(lib.llama_n_batch(ptr))
        self._batch = lib.llama_batch_init(self._batch_capacity, 0, 1)
        self._init_batch_views()

    def _init_batch_views(self) -> None:
        ffi, b, n = _ffi.ffi, self._batch, self._batch_capacity
        self._tok = np.frombuffer(ffi.buffer(b.token, 4 * n), dtype=np.int32)
        self._pos = np.frombuffer(ffi.buffer(b.pos, 4 * n), dtype=np.int32)
        self._out = np.frombuffer(ffi.buffer(b.logits, n), dtype=np.int8)
        np.frombuffer(ffi.buffer(b.n_seq_id, 4 * n), dtype=np.int32)[:] = 1
        for i in range(n):  # every token belongs to sequence 0
            b.seq_id[i][0] = 0

    # -- lifetime --------------------------------------------------------------------------

    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise ClosedError("context is closed" + (" (its model was closed)" if self.model.closed else ""))
        return self._ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Free the context and its batch (safe to call twice). The model stays open."""
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None:
            self._tok = self._pos = self._out = None
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(ptr)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- properties ------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return int(self._lib.llama_n_ctx(self.ptr))

    @property
    def n_batch(self) -> int:
        return int(self._lib.llama_n_batch(self.ptr))

    @property
    def n_ubatch(self) -> int:
        return int(self._lib.llama_n_ubatch(self.ptr))

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def n_outputs(self) -> int:
        """Rows of logits the last decode produced."""
        return self._n_outputs

    def set_causal_attn(self, causal: bool) -> None:
        """Causal attention on (autoregressive) or off (diffusion canvas)."""
        self._lib.llama_set_causal_attn(self.ptr, bool(causal))
        self._causal = bool(causal)

    @property
    def causal_attn(self) -> bool:
        return self._causal

    def clear_memory(self) -> None:
        """Forget every cached token (the KV cache, when the model has one)."""
        mem = self._lib.llama_get_memory(self.ptr)
        if mem != _ffi.NULL:
            self._lib.llama_memory_clear(mem, True)
        self.n_past = 0
        self._history = []
        self._aligned = 0

    def drop_from(self, pos: int) -> None:
        """Forget the cached positions >= ``pos`` (llama_memory_seq_rm); decoding goes on at ``pos``."""
        mem = self._lib.llama_get_memory(self.ptr)
        if mem == _ffi.NULL or not 0 <= pos <= self.n_past or not self._lib.llama_memory_seq_rm(mem, 0, pos, -1):
            raise ContextError(f"cannot drop the cached positions from {pos} of {self.n_past} ({self.model.path.name})")
        self.n_past, self._aligned = pos, min(self._aligned, pos - pos % self.prompt_chunk)
        self._history = None if self._history is None else self._history[:pos]

    @property
    def cached_tokens(self) -> list[int]:
        """The tokens the KV cache holds (positions 0..n_past-1); [] when unknown or empty."""
        return list(self._history or [])

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        """Keep the KV of the longest prefix of ``tokens`` the cache holds *as decode_prompt left
        it* (whole aligned chunks), drop the rest, and return its length: ``decode_prompt(tokens[n:])``
        next. At most ``len(tokens) - 1`` is kept, so the last token's logits are fresh.

        Only whole ``PROMPT_CHUNK``-aligned chunks are kept because llama.cpp's arithmetic
        depends on how many rows a batch holds: a position computed in another batch shape
        (a generated token decoded alone, a shorter last chunk) would give other K/V bits. Each
        kept chunk was computed exactly as an uncached decode_prompt computes it, so the answer
        is bit-identical to an uncached run. 0 (memory cleared) for a model without KV memory,
        an unknown cache, or nothing reusable in common."""
        mem = self._lib.llama_get_memory(self.ptr)
        history = self._history
        n = 0
        if mem != _ffi.NULL and history and not self.model.is_diffusion and len(tokens) > 1:
            limit = min(len(history), len(tokens) - 1, self._aligned)
            same = np.asarray(history[:limit]) == np.asarray(tokens[:limit], dtype=np.int64)
            n = int(limit if same.all() else np.argmin(same))
            n -= n % self.prompt_chunk
        if n == 0 or not self._lib.llama_memory_seq_rm(mem, 0, n, -1):
            self.clear_memory()
            return 0
        self.n_past, self._history, self._aligned = n, history[:n], n
        return n

    @property
    def prompt_chunk(self) -> int:
        return min(PROMPT_CHUNK, self._batch_capacity)

    def decode_prompt(self, tokens: Sequence[int]) -> int:
        """Decode ``tokens`` after the cache (which must end on a chunk boundary, as after
        clear_memory or reuse_prefix) in chunks aligned to multiples of ``prompt_chunk``
        positions, logits for the last token only; returns its logits rows (1)."""
        chunk = self.prompt_chunk
        if self.n_past % chunk:
            raise ValueError(f"decode_prompt must start on a chunk boundary; the cache holds {self.n_past} "
                             f"tokens (not a multiple of {chunk}): call reuse_prefix or clear_memory first")
        tokens = list(tokens)
        produced = 0
        for lo in range(0, len(tokens), chunk):
            piece = tokens[lo:lo + chunk]
            produced = self.decode(piece, logits="last" if lo + chunk >= len(tokens) else "none")
            if len(piece) == chunk and self._aligned == self.n_past - chunk:
                self._aligned = self.n_past
        return produced

    # -- decode ----------------------------------------------------------------------------

    def decode(self, tokens: Sequence[int] | np.ndarray, *, logits: str | Sequence[bool] | np.ndarray = "last",
               pos: int | None = None) -> int:
        """Run ``tokens`` through the model at positions ``pos, pos+1, ...`` (default: after
        what is already cached) and return how many rows of logits were produced.

        ``logits`` says which positions want logits: "last", "all", "none", or a boolean
        array of len(tokens). Inputs longer than n_batch are split; only the last chunk's
        logits remain readable. For diffusion models llama.cpp computes every row anyway.
        """
        if logits == "last" and pos is None and len(tokens) == 1:
            return self._decode_one(int(tokens[0]))
        toks = np.asarray(tokens, dtype=np.int64)
        n = len(toks)
        if toks.ndim != 1 or n == 0:
            raise ValueError(f"tokens must be a non-empty 1-D sequence, got shape {toks.shape}")
        bad = np.flatnonzero((toks < 0) | (toks >= self._n_vocab))
        if len(bad):
            raise ValueError(f"tokens[{bad[0]}] = {toks[bad[0]]} is out of range [0, {self._n_vocab})")
        want = self._want_logits(logits, n)
        start = self.n_past if pos is None else pos
        if start < 0 or start + n > self.n_ctx:
            raise ValueError(f"{n} tokens at position {start} exceed the context (n_ctx={self.n_ctx})")
        cap = self._batch_capacity
        produced = 0
        history, self._history = self._history, None  # unknown until the decode has succeeded
        for lo in range(0, n, cap):
            hi = min(n, lo + cap)
            produced = self._decode_chunk(toks[lo:hi], want[lo:hi], start + lo)
        if history is not None and start == len(history):  # else positions were overwritten or skipped
            history.extend(int(t) for t in toks)
            self._history = history
        self.n_past = start + n
        self._n_outputs = produced
        return produced

    def _decode_one(self, token: int) -> int:
        """The autoregressive hot path: one token after the cache, logits for it (no numpy)."""
        if not 0 <= token < self._n_vocab:
            raise ValueError(f"tokens[0] = {token} is out of range [0, {self._n_vocab})")
        if self.n_past + 1 > self.n_ctx:
            raise ValueError(f"1 tokens at position {self.n_past} exceed the context (n_ctx={self.n_ctx})")
        b = self._batch
        b.token[0], b.pos[0], b.logits[0], b.n_tokens = token, self.n_past, 1, 1
        history, self._history = self._history, None  # unknown until the decode has succeeded
        check_decode(int(self._lib.llama_decode(self.ptr, b)))
        if history is not None and self.n_past == len(history):
            history.append(token)
            self._history = history
        self.n_past += 1
        self._n_outputs = 1
        return 1

    def _decode_chunk(self, toks: np.ndarray, want: np.ndarray, start: int) -> int:
        m = len(toks)
        self._tok[:m] = toks
        self._pos[:m] = np.arange(start, start + m, dtype=np.int32)
        self._out[:m] = want
        self._batch.n_tokens = m
        check_decode(int(self._lib.llama_decode(self.ptr, self._batch)))
        # Models without KV memory (diffusion) run llama_encode, which outputs every row;
        # so does an embeddings context (llama.cpp outputs every token then).
        return m if self.model.is_diffusion or self.embeddings else int(want.sum())

    @staticmethod
    def _want_logits(logits: Any, n: int) -> np.ndarray:
        if isinstance(logits, str):
            want = np.zeros(n, dtype=np.int8)
            if logits == "all":
                want[:] = 1
            elif logits == "last":
                want[-1] = 1
            elif logits != "none":
                raise ValueError(f"logits must be 'last', 'all', 'none' or a boolean array, got {logits!r}")
            return want
        want = np.asarray(logits, dtype=bool)
        if want.shape != (n,):
            raise ValueError(f"logits mask has shape {want.shape}, expected ({n},)")
        return want.astype(np.int8)

    def logits_view(self) -> np.ndarray:
        """Zero-copy ``[n_outputs, n_vocab]`` float32 view of the last decode's logits.

        Valid only until the next decode or close; copy what you keep.
        """
        if self._n_outputs == 0:
            raise ValueError("the last decode produced no logits (pass logits='last' or 'all')")
        ptr = self._lib.llama_get_logits(self.ptr)
        if ptr == _ffi.NULL:
            raise ValueError("llama.cpp has no logits for the last decode")
        n = self._n_outputs * self._n_vocab
        arr = np.frombuffer(_ffi.ffi.buffer(ptr, 4 * n), dtype=np.float32)
        return arr.reshape(self._n_outputs, self._n_vocab)

    def logits(self) -> np.ndarray:
        """A copy of ``logits_view()``."""
        return self.logits_view().copy()

    # -- embeddings (a context made with embeddings=True) -----------------------------------

    @property
    def pooling_type(self) -> int:
        """The pooling llama.cpp applies (POOLING_NONE ... POOLING_RANK; never UNSPECIFIED)."""
        return int(self._lib.llama_pooling_type(self.ptr))

    @property
    def n_embd_out(self) -> int:
        """Width of one output embedding (``llama_model_n_embd_out``; n_embd for most models)."""
        return int(self._lib.llama_model_n_embd_out(self.model.ptr))

    def embeddings_seq(self, seq_id: int = 0) -> np.ndarray:
        """The last decode's pooled embedding of sequence ``seq_id``: ``[n_embd_out]`` float32 (a copy).

        Needs embeddings=True and a pooling type other than NONE (RANK gives ``n_cls_out`` scores).
        """
        self._need_embeddings()
        ptr = self._lib.llama_get_embeddings_seq(self.ptr, int(seq_id))
        if ptr == _ffi.NULL:
            raise ValueError(f"llama.cpp has no pooled embedding for sequence {seq_id} "
                             f"(pooling {POOLING_TYPES[self.pooling_type]}; was it in the last decode?)")
        width = int(self._lib.llama_model_n_cls_out(self.model.ptr)) if self.pooling_type == POOLING_RANK \
            else self.n_embd_out
        return np.frombuffer(_ffi.ffi.buffer(ptr, 4 * width), dtype=np.float32).copy()

    def embeddings_ith(self, i: int) -> np.ndarray:
        """The last decode's embedding of its ``i``-th token (negative counts from the end):
        ``[n_embd_out]`` float32 (a copy). For pooling NONE."""
        self._need_embeddings()
        if not -self._n_outputs <= int(i) < self._n_outputs:
            raise ValueError(f"token index {i} is out of range for the last decode's {self._n_outputs} outputs")
        ptr = self._lib.llama_get_embeddings_ith(self.ptr, int(i))
        if ptr == _ffi.NULL:
            raise ValueError(f"llama.cpp has no embedding for token {i} of the last decode")
        return np.frombuffer(_ffi.ffi.buffer(ptr, 4 * self.n_embd_out), dtype=np.float32).copy()

    def _need_embeddings(self) -> None:
        if not self.embeddings:
            raise ValueError("this context was made without embeddings=True")
