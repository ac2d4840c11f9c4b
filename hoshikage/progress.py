"""Progress display for diffusion steps: a tqdm bar (a widget in Jupyter), for ``on_step=``.

    out = hk.generate(model, prompt, diffusion={"steps": 64}, on_step=hk.progress_bar())
"""
from __future__ import annotations

from typing import Any

import numpy as np


class ProgressBar:
    """A step callback that draws ``tqdm.auto`` progress.

    generate() calls ``finish()`` when the loop ends (steps with nothing left to unmask are
    skipped without a callback, so the last step number seen may be below the total).

    ``show_text=True`` (needs the model) also shows the partly denoised answer as the bar's
    postfix — llama-diffusion-cli's ``--diffusion-visual`` in one line.
    """

    def __init__(self, desc: str = "diffusion", model: Any = None, n_prompt: int = 0, show_text: bool = False,
                 **tqdm_kwargs: Any):
        self.desc, self.model, self.n_prompt, self.show_text = desc, model, n_prompt, show_text
        self.tqdm_kwargs = tqdm_kwargs
        self._bar = None

    def __call__(self, step: int, total: int, canvas: np.ndarray) -> bool:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=self.desc, unit="step", **self.tqdm_kwargs)
        self._bar.n = step + 1  # the step now starting
        if self.show_text and self.model is not None:
            mask = self.model.mask_token
            shown = [int(t) for t in canvas[self.n_prompt:] if t != mask]
            self._bar.set_postfix_str(self.model.detokenize(shown)[-60:], refresh=False)
        self._bar.refresh()
        return True

    def finish(self, cancelled: bool = False) -> None:
        """Fill the bar (unless cancelled) and close it."""
        if self._bar is not None and not cancelled:
            self._bar.n = self._bar.total
            self._bar.refresh()
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_bar(desc: str = "diffusion", **kwargs: Any) -> ProgressBar:
    """A fresh ProgressBar for one generation."""
    return ProgressBar(desc, **kwargs)
