"""The prefix KV cache of the block schedule (Fast-dLLM's prefix cache), through llama.h.

While one block is denoised, the prompt and the finished blocks barely change. At a block's
first step the cache decodes the whole canvas (every row fresh, the KV of every position
kept); at its other steps it drops the cells from the block on (``llama_memory_seq_rm``) and
decodes only the block and what follows it, attending to the cached prefix (causal attention
off: a ubatch attends to every cached cell of its sequence). Positions continue from the
cached maximum, which llama-batch.cpp requires.

llama.cpp gives the diffusion archs no KV memory, so the decodes run on the model's
autoregressive twin (gguf_twin.py): the same weights under ``llama`` / ``qwen2``, whose
full-canvas logits equal the diffusion graph's bit for bit (one ubatch; llama.cpp's F16 KV
cache: flash attention casts the diffusion graph's float32 K and V to F16 too, llama-graph.cpp
``build_attn_mha``). The re-decoded rows are not bit-identical to a full decode (ggml
accumulates differently for other row counts); tests hold them to a tolerance and the same argmax.

A re-decode covers at least MIN_ROWS rows (the canvas's last ones): ggml's CPU flash attention
runs its tiled kernel only for 64 query rows or more (GGML_FA_TILE_Q, ggml-cpu/ops.cpp); fewer
rows take a per-row path that, measured here, costs more than decoding 64.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from ..context import Context
from ..errors import ParameterError
from ..gguf_twin import TwinError, make_twin, twin_arch
from ..model import Model

__all__ = ["PrefixCache", "check_cache_model", "twin_model", "MIN_ROWS"]

MIN_ROWS = 64  # GGML_FA_TILE_Q
_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # diffusion model -> its twin


def check_cache_model(model: Model) -> None:
    """ParameterError (naming ``cache``) unless ``model``'s arch has an autoregressive twin."""
    try:
        twin_arch(model.arch)
    except TwinError as exc:
        raise ParameterError(f"cache='prefix': {exc}", "cache") from None


def twin_model(model: Model) -> Model:
    """The twin of ``model``, loaded on first use and kept while ``model`` is open: ``model.close()``
    (the server's idle unload) closes it too."""
    twin = _TWINS.get(model)
    if twin is None or twin.closed:
        check_cache_model(model)
        twin = Model(make_twin(model.path), n_gpu_layers=model.load_params["n_gpu_layers"])
        model._adopt(twin)  # closed first by model.close(), like the model's contexts
        _TWINS[model] = twin
    return twin


class PrefixCache:
    """A row logits function (``rows(tokens, need) -> (first, float32 [canvas - first, n_vocab])``,
    see sampling/rows.py) over the twin of ``model``.

    blocks: the block plan [(start, end)]; shift: Dream's shifted logits (position p reads row
    p - 1, so a block's rows start one before it); refresh_every: > 0 also decodes the whole
    canvas every that many steps inside a block. Owns its context on the twin (twin_model): close().
    """

    def __init__(self, model: Model, *, canvas_length: int, blocks: Sequence[tuple[int, int]], shift: bool,
                 n_threads: int | None = None, refresh_every: int = 0) -> None:
        self.twin = twin_model(model)
        self.ctx = Context(self.twin, n_ctx=canvas_length, n_batch=canvas_length, n_ubatch=canvas_length,
                           n_threads=n_threads)
        self.ctx.set_causal_attn(False)
        self.starts = np.asarray([s for s, _ in blocks], dtype=np.int64)
        self.shift, self.refresh_every = int(bool(shift)), int(refresh_every)
        self._block, self._since = -1, 0
        self.full_decodes = self.partial_decodes = 0  # forwards of each kind, for the timings

    def rows(self, tokens: np.ndarray, need: int) -> tuple[int, np.ndarray]:
        """Logits rows ``first..`` of ``tokens`` (int32 [canvas]), ``first <= need``: every row at a
        block's first step (or a refresh), else from the block's first row (at least MIN_ROWS)."""
        block = int(np.searchsorted(self.starts, need + self.shift, side="right")) - 1
        self._since += 1
        if block != self._block or (self.refresh_every > 0 and self._since >= self.refresh_every):
            self._block, self._since = block, 0
            self.ctx.clear_memory()
            self.ctx.decode(tokens, logits="all", pos=0)
            self.full_decodes += 1
            return 0, self.ctx.logits_view()
        first = min(need, max(0, int(self.starts[block]) - self.shift), max(0, len(tokens) - MIN_ROWS))
        self.ctx.drop_from(first)
        self.ctx.decode(tokens[first:], logits="all", pos=first)
        self.partial_decodes += 1
        return first, self.ctx.logits_view()

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> PrefixCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
