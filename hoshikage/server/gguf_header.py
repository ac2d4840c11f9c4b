"""A model's kind from its GGUF header, without loading it.

Used to label registry entries (``hoshikage list``, ``GET /v1/models``) as autoregressive or
diffusion before they are ever loaded; once loaded, ``Model.is_diffusion`` is the authority.
The header is read by :func:`hoshikage.gguf_file.read_architecture`, only up to
``general.architecture`` (the first key llama.cpp's converters and the gguf package write).
"""
from __future__ import annotations

import os

from ..gguf_file import read_architecture

__all__ = ["DIFFUSION_ARCHS", "guess_kind", "read_architecture"]

# llama.cpp: llama_model_is_diffusion() is true for these architectures.
DIFFUSION_ARCHS = frozenset({"llada", "llada-moe", "dream", "rnd1"})


def guess_kind(path: str | os.PathLike) -> str | None:
    """"diffusion", "autoregressive", or None when the header cannot be read."""
    arch = read_architecture(path)
    if arch is None:
        return None
    return "diffusion" if arch in DIFFUSION_ARCHS else "autoregressive"
