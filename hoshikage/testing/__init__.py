"""Test helpers: small generated models for exercising Hoshikage without a model hub.

``diffusion_models`` writes random-weight diffusion-LLM GGUFs (LLaDA, Dream, LLaDA-MoE,
RND1) that llama.cpp loads and runs like the real checkpoints. They are NOT real models.
``reference`` runs llama.cpp's own diffusion loop on a Context (parity tests, benchmarks).

    from hoshikage.testing import ensure_test_model
    path = ensure_test_model("llada-tiny")

Names are imported lazily, so ``python -m hoshikage.testing.diffusion_models`` runs cleanly.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ARCH_NAMES", "GENERATOR_VERSION", "PRESETS", "TINY_PRESETS", "WeightStyle",
           "cached_model_path", "default_cache_dir", "ensure_test_model", "llama_tool",
           "write_diffusion_gguf"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".diffusion_models", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
