"""The forward pass llama.cpp's ``llada`` and ``dream`` graphs compute, in JAX.

Parameters are a flat dict keyed by GGUF tensor names, in numpy order (``(out, in)`` for a
matrix, as ``hoshikage.testing._archs.tensor_shapes``), so exporting is a rename-free copy.

Per layer (``src/models/llada.cpp``, ``src/models/dream.cpp``):
    h   = x + wo @ attn(rope(wq @ rms(x) [+ bq]), rope(wk @ rms(x) [+ bk]), wv @ rms(x) [+ bv])
    out = h + w_down @ (silu(w_gate @ rms(h)) * (w_up @ rms(h)))
with RMSNorm ``x / sqrt(mean(x^2) + eps) * w``, non-causal attention scaled by
``1 / sqrt(head_dim)``, grouped kv heads (query head ``h`` reads kv head ``h // (n_head /
n_head_kv)``), RoPE over the whole head (NORM: pairs (2i, 2i+1) for LLaDA; NEOX: pairs
(i, i + d/2) for Dream) with angle ``pos * base^(-2i/d)``. Logits = ``output @ rms(x_L)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .config import Config


def _rms(x, w, eps):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, cos, sin, neox: bool):
    """x [B, T, H, D]; cos/sin [T, D/2]."""
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    if neox:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return jnp.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1).reshape(x.shape)


def forward(cfg: Config, params, tokens, lengths):
    """Logits [B, T, n_vocab] float32 for token ids ``tokens`` [B, T] (int32). Sequence ``b``
    is ``tokens[b, :lengths[b]]``: keys at or after ``lengths[b]`` are masked out (rows there
    are garbage), as if llama.cpp ran a canvas of exactly ``lengths[b]`` tokens."""
    spec = cfg.spec
    B, T = tokens.shape
    hd, H, Hkv = cfg.head_dim, cfg.n_head, cfg.n_head_kv
    pos = jnp.arange(T, dtype=jnp.float32)
    inv = spec.rope_freq_base ** (-jnp.arange(hd // 2, dtype=jnp.float32) * 2.0 / hd)
    ang = pos[:, None] * inv[None, :]
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    key_ok = jnp.arange(T)[None, :] < lengths[:, None]                     # [B, T]
    bias = jnp.where(key_ok, 0.0, -1e30)[:, None, None, :]                 # [B, 1, 1, T]
    x = params["token_embd.weight"][tokens]
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        h = _rms(x, params[p + "attn_norm.weight"], spec.rms_eps)
        q, k, v = (h @ params[p + f"attn_{n}.weight"].T for n in "qkv")
        if spec.qkv_bias:
            q, k, v = q + params[p + "attn_q.bias"], k + params[p + "attn_k.bias"], v + params[p + "attn_v.bias"]
        q = _rope(q.reshape(B, T, H, hd), cos, sin, spec.rope_neox)
        k = _rope(k.reshape(B, T, Hkv, hd), cos, sin, spec.rope_neox)
        v = v.reshape(B, T, Hkv, hd)
        if Hkv != H:
            k, v = jnp.repeat(k, H // Hkv, axis=2), jnp.repeat(v, H // Hkv, axis=2)
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd) + bias
        att = jax.nn.softmax(att, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, T, H * hd)
        x = x + o @ params[p + "attn_output.weight"].T
        h = _rms(x, params[p + "ffn_norm.weight"], spec.rms_eps)
        g = jax.nn.silu(h @ params[p + "ffn_gate.weight"].T) * (h @ params[p + "ffn_up.weight"].T)
        x = x + g @ params[p + "ffn_down.weight"].T
    x = _rms(x, params["output_norm.weight"], spec.rms_eps)
    return x @ params["output.weight"].T
