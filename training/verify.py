"""Check that the JAX forward computes what llama.cpp computes on the exported GGUF.

For a few task prompts (chat-templated by llama.cpp's tokenizer, compared with
training.data.prompt_ids) and canvases with masks, compare the JAX logits (weights rounded to
the file's F16) with ``hoshikage.Context`` logits: max abs difference and argmax agreement.
Where the argmaxes differ, ``disagree_max_gap`` is the largest margin by which llama.cpp's
top logit beat the JAX pick's (0.0 when they all agree): rounding can only flip near-ties,
so a gap well below ``max_abs_diff`` means rounding, a gap above it a real mismatch.

    python -m training.verify /tmp/llada-tasks.npz hoshikage/trained/llada-tasks.gguf
"""
from __future__ import annotations

import argparse
import json
import random
import sys

import numpy as np


def verify(ckpt: str, gguf: str, n: int = 6, f16: bool = True) -> dict:
    """``f16``: round the JAX weights to float16 first (the file stores F16 matrices)."""
    import jax.numpy as jnp

    import hoshikage as hk
    from hoshikage.generation import prepare_prompt

    from .data import prompt_ids, text_ids, vocab_ids
    from .export import load_checkpoint
    from .config import Config
    from .jax_model import forward
    from .tasks import CANVAS, TASKS

    meta, tensors = load_checkpoint(ckpt)
    c = meta["config"]
    cfg = Config(**c)
    ids = vocab_ids(cfg.arch)
    p16 = {k: jnp.asarray(v.astype(np.float16).astype(np.float32) if v.ndim == 2 and f16 else v)
           for k, v in tensors.items()}
    rng = random.Random(7)
    worst, gap, agree, total, tok_ok = 0.0, 0.0, 0, 0, True
    with hk.Model(gguf) as model, hk.Context(model, n_ctx=CANVAS, n_ubatch=CANVAS) as ctx:
        ctx.set_causal_attn(False)
        for i in range(n):
            item = TASKS[list(TASKS)[i % len(TASKS)]].draw(rng)
            mine = prompt_ids(ids, item.prompt)
            theirs = prepare_prompt(model, messages=[{"role": "user", "content": item.prompt}])
            tok_ok &= mine == list(theirs)
            canvas = mine + text_ids(item.answers[0]) + [ids.eos] * CANVAS
            canvas = np.asarray(canvas[:CANVAS], np.int32)
            m = np.arange(CANVAS) >= len(mine)
            m &= np.asarray([rng.random() < 0.6 for _ in range(CANVAS)])
            canvas[m] = ids.mask
            ctx.clear_memory()
            ctx.decode(canvas, logits="all", pos=0)
            ref = np.array(ctx.logits()[:CANVAS])
            got = np.asarray(forward(cfg, p16, jnp.asarray(canvas[None]), jnp.asarray([CANVAS])))[0]
            worst = max(worst, float(np.abs(ref - got).max()))
            same = ref.argmax(-1) == got.argmax(-1)
            agree += int(same.sum())
            rows = np.flatnonzero(~same)
            if rows.size:  # ref's margin of its own top over the JAX pick, in ref's logits
                margin = ref[rows].max(-1) - ref[rows, got[rows].argmax(-1)]
                gap = max(gap, float(margin.max()))
            total += CANVAS
    return {"tokens_match": bool(tok_ok), "max_abs_diff": worst, "argmax_agree": agree / total,
            "disagree_max_gap": gap, "logit_scale": float(np.abs(ref).max())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.verify", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("gguf")
    ap.add_argument("--f32", action="store_true", help="the file was exported with --dtype f32")
    a = ap.parse_args(argv)
    r = verify(a.checkpoint, a.gguf, f16=not a.f32)
    print(json.dumps(r))
    return 0 if r["tokens_match"] and r["argmax_agree"] > 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
