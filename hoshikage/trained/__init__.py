"""Small diffusion models trained on Hoshikage's synthetic tasks (committed, about 1 MB each).

Unlike ``hoshikage.testing``'s random-weight models these have learned something, but only
their tasks (``training/tasks.py``): number to words (0-99), 2-digit + 1-digit addition, anagrams
of a listed word, three different items of a category in alphabetical order, and anagrams
after few-shot examples. They know nothing else. How they were made: docs/trained-models.md.

    from hoshikage.trained import trained_model_path, TRAINED_MODELS
    path = trained_model_path("llada-tasks")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TRAINED_MODELS", "TrainedModel", "trained_model_path"]

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TrainedModel:
    """A committed model and the decoding it was measured with (llama-diffusion-cli flags)."""
    name: str
    arch: str
    file: str
    cli_args: tuple[str, ...]   # the defaults: -ub (canvas, prompt included), steps, schedule, ...
    diffusion: dict             # the same defaults as hoshikage DiffusionParams fields
    example_prompt: str = "63 in words"  # a prompt it answers (printed by `hoshikage serve`)
    canvas: int = 96

    @property
    def path(self) -> Path:
        return _HERE / self.file


TRAINED_MODELS: dict[str, TrainedModel] = {
    "llada-tasks": TrainedModel(
        "llada-tasks", "llada", "llada-tasks.gguf",
        ("-ub", "96", "--diffusion-steps", "96", "--diffusion-block-length", "32",
         "--diffusion-algorithm", "4", "--temp", "0", "--top-k", "0", "--top-p", "1.0", "--seed", "0"),
        {"steps": 96, "schedule": 1, "block_length": 32, "algorithm": 4}),
    "dream-tasks": TrainedModel(
        "dream-tasks", "dream", "dream-tasks.gguf",
        ("-ub", "96", "--diffusion-steps", "96", "--diffusion-block-length", "32",
         "--diffusion-algorithm", "4", "--temp", "0", "--top-k", "0", "--top-p", "1.0", "--seed", "0"),
        {"steps": 96, "schedule": 1, "block_length": 32, "algorithm": 4}, "unscramble dstuy"),
}


def trained_model_path(name: str) -> Path:
    """Path of the committed GGUF ``name`` (a key of TRAINED_MODELS); FileNotFoundError if the
    installed package lacks it."""
    if name not in TRAINED_MODELS:
        raise KeyError(f"unknown trained model {name!r}; known: {', '.join(TRAINED_MODELS)}")
    path = TRAINED_MODELS[name].path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (a package installed without its data files?)")
    return path
