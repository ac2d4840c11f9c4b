"""Hoshikage (星影): GGUF language models on llama.cpp — autoregressive and diffusion — from Python.

    import hoshikage as hk
    with hk.Model(hk.smollm2_path()) as model:
        print(hk.generate(model, messages=[{"role": "user", "content": "Hi!"}], max_tokens=32).text)

Importing this package never loads the native library; the first Model does.
"""
from .context import Context
from .embeddings import embed
from .errors import (ClosedError, ContextError, DecodeError, GenerationCancelled, HoshikageError,
                     ModelLoadError)
from .generation import Chunk, Completion, SamplingParams, generate, prepare_prompt
from .model import Model
from .default_models import smollm2_path
from .progress import ProgressBar, progress_bar
from .sampling.params import Algorithm, DiffusionParams, Schedule

__version__ = "1.1.0"

__all__ = [
    "Algorithm", "Chunk", "ProgressBar", "progress_bar", "ClosedError", "Completion", "Context", "ContextError", "DecodeError",
    "DiffusionParams", "GenerationCancelled", "HoshikageError", "Model", "ModelLoadError",
    "SamplingParams", "Schedule", "embed", "generate", "prepare_prompt", "smollm2_path", "__version__",
]
