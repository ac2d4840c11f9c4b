"""GPU check: the diffusion path on a CUDA build of llama.cpp.

Run on a machine with an NVIDIA GPU after ``python build_llama.py --cuda``:

    python scripts/gpu_check.py MODEL.gguf [MODEL.gguf ...]

For each diffusion model it (1) confirms llama.cpp offloaded to the GPU, (2) checks that
hoshikage.sampling gives exactly llama.cpp's own diffusion_generate tokens on the GPU
context, (3) compares the GPU canvas with the CPU canvas (float differences may legitimately
change tokens; reported, not asserted), and (4) times a 256-token canvas at 64 steps.
Exit status 1 if any parity check fails.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import hoshikage as hk
from hoshikage import _ffi
from hoshikage.testing.reference import reference_diffusion
from hoshikage.generation.diffusion import diffuse
from hoshikage.sampling import Algorithm, DiffusionParams, Schedule


def ours(model, ctx, prompt, canvas, params):
    return diffuse(model, ctx, prompt, canvas_length=canvas, params=params)


def configs(arch_is_llada: bool):
    sched = dict(schedule=Schedule.BLOCK_BASED, block_length=32, eps=0.0) if arch_is_llada else \
        dict(schedule=Schedule.TIMESTEP_BASED, eps=1e-3, block_length=0)
    for alg in Algorithm:
        yield DiffusionParams(steps=16, algorithm=alg, temperature=0.0, seed=1, **sched)
        yield DiffusionParams(steps=16, algorithm=alg, temperature=0.8, top_k=40, top_p=0.9, seed=2, **sched)
    yield DiffusionParams(steps=16, temperature=0.6, cfg_scale=1.5, alg_temp=0.5, add_gumbel_noise=True, seed=3, **sched)


def main(paths: list[str]) -> int:
    lib = _ffi.lib()
    info = _ffi.ffi.string(lib.llama_print_system_info()).decode()
    print("llama.cpp:", _ffi.native_build().llama_cpp_commit, "| supports GPU offload:",
          bool(lib.llama_supports_gpu_offload()))
    print("system info:", info)
    failures = 0
    for path in paths:
        gpu_model = hk.Model(path, n_gpu_layers=-1)
        cpu_model = hk.Model(path, n_gpu_layers=0)
        llada = gpu_model.arch.startswith("llada")
        prompt = gpu_model.tokenize("Write a haiku about the stars.", add_special=False)
        print(f"\n== {path} ({gpu_model.arch}, {gpu_model.n_vocab} tokens)")
        with hk.Context(gpu_model, n_ctx=64, n_batch=64, n_ubatch=64) as gctx, \
                hk.Context(cpu_model, n_ctx=64, n_batch=64, n_ubatch=64) as cctx:
            for params in configs(llada):
                ref = reference_diffusion(gctx, prompt, canvas_length=64, params=params,
                                          mask_token_id=gpu_model.mask_token, shift_logits=gpu_model.shift_logits)
                got = ours(gpu_model, gctx, prompt, 64, params).tokens
                cpu = ours(cpu_model, cctx, prompt, 64, params).tokens
                same = np.array_equal(ref, got)
                failures += not same
                print(f"  {params.algorithm.name:16s} T={params.temperature} cfg={params.cfg_scale}: "
                      f"GPU parity {'OK' if same else 'MISMATCH'}; GPU vs CPU canvas "
                      f"{'identical' if np.array_equal(got, cpu) else f'{int((got != cpu).sum())} tokens differ'}")
        for model, label in ((gpu_model, "GPU"), (cpu_model, "CPU")):
            with hk.Context(model, n_ctx=256, n_batch=256, n_ubatch=256) as ctx:
                params = DiffusionParams(steps=64, seed=1, **(dict(schedule=Schedule.BLOCK_BASED, block_length=32)
                                                              if llada else dict(eps=1e-3)))
                ours(model, ctx, prompt, 256, DiffusionParams(steps=2, seed=1, eps=1e-3))  # warm-up
                t0 = time.perf_counter()
                r = ours(model, ctx, prompt, 256, params)
                total = time.perf_counter() - t0
                print(f"  {label}: canvas 256, 64 steps: {1000 * total / 64:.1f} ms/step "
                      f"(decode {1000 * r.decode_seconds / 64:.1f}, sampling {1000 * r.sampling_seconds / 64:.1f}), "
                      f"{(256 - len(prompt)) / total:.0f} tokens/s")
        gpu_model.close()
        cpu_model.close()
    print("\nparity failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
