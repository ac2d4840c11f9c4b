"""Test helpers: small generated models for exercising Hoshikage without a model hub.

``diffusion_models`` writes random-weight diffusion-LLM GGUFs (LLaDA, Dream, LLaDA-MoE,
RND1) that llama.cpp loads and runs like the real checkpoints. They are NOT real models.
"""
from .diffusion_models import (ARCH_NAMES, GENERATOR_VERSION, PRESETS, TINY_PRESETS, WeightStyle,
                               cached_model_path, default_cache_dir, ensure_test_model, llama_tool,
                               write_diffusion_gguf)

__all__ = ["ARCH_NAMES", "GENERATOR_VERSION", "PRESETS", "TINY_PRESETS", "WeightStyle",
           "cached_model_path", "default_cache_dir", "ensure_test_model", "llama_tool",
           "write_diffusion_gguf"]
