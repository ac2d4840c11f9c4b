"""The models ``make run`` serves: SmolLM2 (real) and the two small trained diffusion models.

``llada-tasks`` and ``dream-tasks`` (hoshikage/trained, docs/trained-models.md) were trained on
a handful of synthetic tasks and know nothing else: their descriptions list the prompts they
answer. The random-weight test models of ``hoshikage.testing`` stay for the tests; a registry
that still holds ``test-llada-tiny`` from an earlier version keeps it. Existing entries with
these names are left alone, except that a missing file is repointed.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from .registry import ModelEntry, Registry

log = logging.getLogger("hoshikage.server")

AR_NAME = "smollm2"
TASK_PROMPTS = "'63 in words', 'unscramble dstuy', '85+3='"
# The trained models' architectures, as their descriptions name them. Their registry defaults are
# the decoding their accuracy was measured with (hoshikage.trained.TRAINED_MODELS[...].diffusion);
# the server's canvas is prompt + max_tokens (the block schedule rounds it up to 32s).
DIFFUSION_MODELS = {"llada-tasks": "LLaDA architecture", "dream-tasks": "Dream architecture"}
DIFFUSION_MAX_TOKENS = 32


def _describe(name: str, arch: str) -> str:
    return (f"{name}: a 0.5M-parameter {arch} diffusion model trained only on synthetic tasks "
            f"(number words 0-99, 2-digit + 1-digit addition, anagrams, three items of a category, sorted); "
            f"ask e.g. {TASK_PROMPTS} (it gets some wrong: docs/trained-models.md). It knows nothing else.")


def ensure_default_models(registry: Registry) -> list[str]:
    """Register the default models that are missing; return the names added or repointed.

    An existing entry is left alone, except that its path is updated when its file is gone.
    """
    from ..default_models import smollm2_path
    from ..trained import TRAINED_MODELS, trained_model_path

    entries = registry.entries()
    changed = []
    wanted = {AR_NAME: (smollm2_path, lambda path: ModelEntry(
        name=AR_NAME, path=path, description="SmolLM2-135M-Instruct (Q4_1), autoregressive"))}
    for name, arch in DIFFUSION_MODELS.items():
        params = TRAINED_MODELS[name].diffusion
        wanted[name] = (lambda n=name: trained_model_path(n), lambda path, n=name, p=params, a=arch: ModelEntry(
            name=n, path=path, description=_describe(n, a), diffusion=dict(p), max_tokens=DIFFUSION_MAX_TOKENS))
    for name, (locate, make) in wanted.items():
        current = entries.get(name)
        if current is not None and current.path.is_file():
            continue
        path = Path(locate()).resolve()
        if current is not None:
            if current.path == path:
                continue
            entry = replace(current, path=path)
            log.info("default model %s now points at %s (was %s)", name, path, current.path)
        else:
            entry = make(path)
            log.info("registered default model %s (%s)", name, path)
        registry.add(entry)
        changed.append(name)
    return changed
