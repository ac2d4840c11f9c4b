"""Where Hoshikage's diffusion time goes, for one benchmark configuration (cProfile).

    python -m benchmarks.profile_diffusion llada-c256-s32-timestep-entropy-full [--threads 2] [--top 25]

Runs the configuration once through ``hoshikage.generate`` (as ``hoshikage generate`` does)
under cProfile and prints the functions with the most time of their own, and the split
between llama.cpp (decode) and the numpy sampler. Names: see ``diffusion.full_configs()``
and ``quick_configs()``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys

from . import diffusion


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_diffusion", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a configuration name from benchmarks/diffusion.py")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, help="override the configuration's steps (shorter profile)")
    args = ap.parse_args(argv)
    configs = {c.name: c for c in diffusion.full_configs() + diffusion.quick_configs()}
    if args.config not in configs:
        ap.error(f"unknown configuration {args.config!r}; one of: {', '.join(configs)}")
    c = configs[args.config]

    import hoshikage as hk
    from hoshikage.testing.diffusion_models import ensure_test_model

    steps = args.steps or c.steps
    opts = {"steps": steps, "algorithm": c.algorithm,
            "schedule": hk.Schedule.BLOCK_BASED if c.schedule == "block" else hk.Schedule.TIMESTEP_BASED,
            "eps": c.eps, "block_length": c.block_length, "cfg_scale": c.cfg_scale}
    with hk.Model(ensure_test_model(c.model)) as model:
        messages = [{"role": "user", "content": diffusion.PROMPT}]
        n_prompt = len(hk.prepare_prompt(model, messages=messages))
        prof = cProfile.Profile()
        prof.enable()
        out = hk.generate(model, messages=messages, max_tokens=c.canvas - n_prompt, temperature=c.temperature,
                          top_k=c.top_k, top_p=c.top_p, seed=c.seed, diffusion=opts, adjust=False,
                          n_ctx=c.canvas, n_threads=args.threads)
        prof.disable()
    t = out.timings
    print(f"{c.label()} (steps {steps}), {args.threads} threads: total {1000 * t.generation_seconds:.0f} ms = "
          f"decode {1000 * t.decode_seconds / steps:.2f} ms/step + sampling {1000 * t.sampling_seconds / steps:.2f} "
          f"ms/step ({100 * t.sampling_seconds / max(t.generation_seconds, 1e-9):.0f}% sampling)")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
    print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
