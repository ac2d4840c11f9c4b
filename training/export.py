"""Write a training checkpoint (.npz from training.train) as a llama.cpp GGUF through
hoshikage.testing's writer: the converters' metadata, the byte-level vocabulary, the family's
chat template, F16 matrices (1-D tensors F32).

    python -m training.export /tmp/llada-tasks.npz hoshikage/trained/llada-tasks.gguf
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, tensors) of a checkpoint; tensors are float32 in numpy order."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        tensors = {k: z[k] for k in z.files if k != "__meta__"}
    return meta, tensors


def export(ckpt: str | Path, out: str | Path, dtype: str = "f16") -> Path:
    from hoshikage.testing.diffusion_models import write_diffusion_gguf

    meta, tensors = load_checkpoint(ckpt)
    c, r = meta["config"], meta["recipe"]
    about = (f"hoshikage-{meta['name']} (trained on hoshikage's synthetic tasks only)",
             f"A {c['n_layer']}-layer, {c['n_embd']}-wide {c['arch']} diffusion model trained by "
             f"training/train.py (recipe {meta['name']}, seed {r['seed']}, {meta['step']} steps) on "
             f"training/tasks.py: number words (0-99), 2-digit + 1-digit addition, anagrams, three "
             f"items of a category in alphabetical order. It knows nothing else. See docs/trained-models.md.")
    return write_diffusion_gguf(out, c["arch"], n_embd=c["n_embd"], n_layer=c["n_layer"],
                                n_head=c["n_head"], n_head_kv=c["n_head_kv"], n_ff=c["n_ff"],
                                seed=r["seed"], dtype=dtype, vocab="bytes", tensors=tensors,
                                about=about)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=("f16", "f32"), default="f16")
    a = ap.parse_args(argv)
    p = export(a.checkpoint, a.out, a.dtype)
    print(f"{p}: {p.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
