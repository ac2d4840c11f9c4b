"""Where Hoshikage's diffusion time goes, for one benchmark configuration (cProfile).

    python -m benchmarks.profile_diffusion llada-c256-s32-timestep-entropy-full [--threads 1] [--steps 8]

Runs the configuration once through ``hoshikage.generate`` (as ``hoshikage generate`` does)
under cProfile and prints the split between llama.cpp (decode) and the numpy sampler, then
the functions with the most time of their own. cProfile sees only the calling thread, so
the sampler's functions show up with ``--threads 1`` (the default); with more threads they
run on the pool and the profile shows the main thread waiting. Names: see
``diffusion.full_configs()`` and ``quick_configs()``.
"""
from __future__ import annotations

import argparse
import sys

from . import diffusion
from .explain import profile_diffusion_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_diffusion", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a configuration name from benchmarks/diffusion.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, help="override the configuration's steps (shorter profile)")
    args = ap.parse_args(argv)
    names = [c.name for c in diffusion.full_configs() + diffusion.quick_configs()]
    if args.config not in names:
        ap.error(f"unknown configuration {args.config!r}; one of: {', '.join(names)}")
    p = profile_diffusion_config(args.config, steps=args.steps, threads=args.threads)
    print(f"{p['what']}: decode {p['decode_ms_per_step']:.2f} ms/step + sampling "
          f"{p['sampling_ms_per_step']:.2f} ms/step\n")
    print(f"{'own s':>8} {'cum s':>8} {'calls':>8}  function")
    for t in p["top"]:
        print(f"{t['own_s']:8.3f} {t['cum_s']:8.3f} {t['calls']:8d}  {t['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
