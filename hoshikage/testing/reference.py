"""llama.cpp's own diffusion loop, run in-process on a Hoshikage Context.

``reference_diffusion`` calls ``diffusion_generate`` from llama.cpp's
``examples/diffusion/diffusion.cpp`` through the project's shim (``native/diffusion_ref.cpp``),
with every parameter reachable — including cfg_scale and alg_temp, which llama-diffusion-cli
drops. Parity tests and benchmarks compare ``hoshikage.sampling`` against it on the very same
context, so both see identical logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import _ffi
from ..context import Context
from ..sampling.params import DiffusionParams


def _as_int32(seed: int) -> int:
    """diffusion_params.seed is int32_t: a uint32 seed wraps (0xFFFFFFFF -> -1), as in C."""
    return seed - 2**32 if seed >= 2**31 else seed


def reference_diffusion(ctx: Context, prompt_tokens: Sequence[int], *, canvas_length: int,
                        params: DiffusionParams, mask_token_id: int, shift_logits: bool) -> np.ndarray:
    """Run llama.cpp's diffusion_generate; return the canvas, int32 ``[canvas_length]``.

    The caller validates ``params`` first (the reference asserts on bad block settings).
    Causal attention is restored afterwards; the reference leaves it off.
    """
    return reference_run(ctx, prompt_tokens, canvas_length=canvas_length, params=params,
                         mask_token_id=mask_token_id, shift_logits=shift_logits)[0]


def reference_run(ctx: Context, prompt_tokens: Sequence[int], *, canvas_length: int, params: DiffusionParams,
                  mask_token_id: int, shift_logits: bool) -> tuple[np.ndarray, int]:
    """:func:`reference_diffusion`'s canvas and the forwards (model passes) it ran: its step
    callback runs before each step's decode (two with cfg_scale > 0), and every step decodes,
    even one that then finds its block without masks."""
    n_input = len(prompt_tokens)
    if not 0 < n_input < canvas_length <= ctx.n_ubatch:
        raise ValueError(f"need 0 < prompt ({n_input}) < canvas ({canvas_length}) <= n_ubatch ({ctx.n_ubatch})")
    ffi = _ffi.ffi
    ref = _ffi.reference_lib()
    p = ffi.new("struct hk_ref_params *")
    p.steps = params.steps
    p.temperature = params.temperature
    p.mask_token_id = mask_token_id
    p.seed = _as_int32(params.seed)
    p.shift_logits = int(shift_logits)
    p.top_p = params.top_p
    p.top_k = params.top_k
    p.algorithm = int(params.algorithm)
    p.schedule = int(params.schedule)
    p.cfg_scale = params.cfg_scale
    p.eps = params.eps
    p.block_length = params.block_length
    p.alg_temp = params.alg_temp
    p.add_gumbel_noise = int(params.add_gumbel_noise)
    p.max_length = canvas_length
    inp = ffi.new("llama_token[]", [int(t) for t in prompt_tokens])
    out = ffi.new("llama_token[]", canvas_length)
    steps = [0]

    @ffi.callback("hk_ref_step_callback")
    def count(step, total_steps, tokens, n_tokens, user_data):
        steps[0] += 1
        return True

    try:
        n = ref.hk_ref_diffusion_generate(ctx.ptr, inp, n_input, out, p, count, ffi.NULL)
    finally:
        ctx.set_causal_attn(True)
    if n != canvas_length:
        raise RuntimeError(f"llama.cpp's diffusion_generate failed (returned {n}; see the hoshikage.llama log)")
    passes = 2 if np.float32(params.cfg_scale) > 0 else 1
    return np.frombuffer(ffi.buffer(out, 4 * canvas_length), dtype=np.int32).copy(), passes * steps[0]
