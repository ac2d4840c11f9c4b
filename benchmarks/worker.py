"""Hoshikage's side of a comparison, in a process of its own: ``python -m benchmarks.worker KIND JOB``.

KIND is ``identity`` (diffusion: llama.cpp's diffusion_generate and Hoshikage's numpy loop on
one Context, canvases compared token by token) or ``ar`` (autoregressive: one warm-up, then
one streamed greedy generation timed from outside the library, exactly as
``lcpp_worker.py`` times llama-cpp-python). JOB is a JSON object; one JSON line is printed.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def identity(job: dict) -> dict:
    import hoshikage as hk
    from hoshikage.testing.reference import reference_diffusion
    from hoshikage.sampling import run_diffusion
    from hoshikage.testing.diffusion_models import ensure_test_model

    block = job["schedule"] == "block"
    params = hk.DiffusionParams(
        steps=job["steps"], algorithm=hk.Algorithm(job["algorithm"]),
        schedule=hk.Schedule.BLOCK_BASED if block else hk.Schedule.TIMESTEP_BASED, eps=job["eps"],
        block_length=job["block_length"], temperature=job["temperature"], top_k=job["top_k"],
        top_p=job["top_p"], cfg_scale=job["cfg_scale"], seed=job["seed"])
    path = job.get("model_path") or ensure_test_model(job["model"])
    canvas = job["canvas"]
    with hk.Model(path) as model:
        prompt = hk.prepare_prompt(model, job["prompt"], chat_template=True)  # as llama-diffusion-cli
        with hk.Context(model, n_ctx=canvas, n_batch=canvas, n_ubatch=canvas, n_threads=job["threads"]) as ctx:
            t0 = time.perf_counter()
            ref = reference_diffusion(ctx, prompt, canvas_length=canvas, params=params,
                                      mask_token_id=model.mask_token, shift_logits=model.shift_logits)
            t_ref = time.perf_counter() - t0

            def logits_fn(tokens: np.ndarray) -> np.ndarray:
                ctx.decode(tokens, logits="all", pos=0)
                return ctx.logits_view()

            ctx.set_causal_attn(False)
            try:
                t0 = time.perf_counter()
                ours = run_diffusion(np.asarray(prompt, dtype=np.int32), canvas_length=canvas,
                                     mask_token_id=model.mask_token, n_vocab=model.n_vocab, logits_fn=logits_fn,
                                     params=params, shift_logits=model.shift_logits)
                t_ours = time.perf_counter() - t0
            finally:
                ctx.set_causal_attn(True)
    diff = np.flatnonzero(ref != ours.tokens)
    return {"identical": diff.size == 0, "first_difference": int(diff[0]) if diff.size else None,
            "canvas": canvas, "n_prompt": len(prompt), "prompt_tokens": list(prompt),
            "reference_s": t_ref, "hoshikage_s": t_ours}


def ar(job: dict) -> dict:
    import hoshikage as hk

    with hk.Model(job["model_path"]) as model, \
            hk.Context(model, n_ctx=job["n_ctx"], n_threads=job["threads"]) as ctx:
        hk.generate(model, job["prompt"], max_tokens=8, temperature=0, context=ctx)  # warm-up
        t0 = time.perf_counter()
        first = None
        completion = None
        for chunk in hk.generate(model, job["prompt"], max_tokens=job["max_tokens"], temperature=0,
                                 context=ctx, stream=True):
            if first is None and chunk.text:
                first = time.perf_counter()
            completion = chunk.completion or completion
        t_end = time.perf_counter()
    n = completion.completion_tokens
    return {"n_prompt": completion.prompt_tokens, "n_gen": n, "ttft_ms": 1000 * (first - t0),
            "prompt_tps": completion.prompt_tokens / (first - t0),
            "gen_tps": (n - 1) / (t_end - first) if n > 1 else None,
            "library_timings": {"prompt_s": completion.timings.prompt_seconds,
                                "generation_s": completion.timings.generation_seconds},
            "text": completion.text}


def main(argv: list[str]) -> int:
    kind, job = argv[0], json.loads(argv[1])
    out = {"identity": identity, "ar": ar}[kind](job)
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
