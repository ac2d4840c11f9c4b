"""Random but *peaked* weights for the generated diffusion test models.

The models are not trained; the weights are drawn so that llama.cpp's diffusion sampler
sees something shaped like a language model's output rather than uniform noise:

- logits: hidden states are RMS-normalised before the output projection, so an output row
  drawn as N(0, s^2/n_embd) gives that token a logit of standard deviation ``s``. Ordinary
  tokens get ``s = logit_std`` (3), the 1,024 most frequent space-prefixed English word
  tokens (plus "," and ".") ``s * favored_boost`` so they dominate the top-k and the output
  reads as a jumble of words, and every control token (mask, bos/eos, chat markers,
  reserved padding) gets ``s = 0``: a logit of exactly 0, never sampled;
- context and position dependence: the mask token's embedding is small and its first-layer
  value vector is projected to zero, so at a masked position the residual stream holds what
  attention gathered from real tokens rather than a vector all masked positions share; q/k
  weights favour the fast-rotating RoPE pairs so attention (and the prediction) changes from
  one position to the next; query/key scales give attention scores of a few units. The
  result: neighbouring masked positions mostly predict different tokens, and the top
  token's probability ranges from ~0.01 to ~1 across positions;
- determinism: each tensor has its own generator seeded by ``(seed, crc32(name))``.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from ._archs import ArchSpec, Dims
from ._vocab import CONTROL, UNUSED, Vocab


@dataclass(frozen=True)
class WeightStyle:
    logit_std: float = 3.0      # std of an ordinary token's logit
    favored_boost: float = 1.6  # multiplier on the logit std of the favoured word tokens
    n_favored: int = 1024       # how many common word tokens are favoured
    qk_gain: float = 1.6        # q, k entries ~ N(0, qk_gain^2): scores' std ~ qk_gain^2
    attn_gain: float = 1.5      # scale of the attention output projection
    ffn_gain: float = 1.0       # scale of the FFN down projection
    router_gain: float = 2.0    # MoE router logits' std
    rope_hf_boost: float = 3.0  # extra q/k weight on the fastest-rotating quarter of RoPE pairs
    mask_embd_scale: float = 0.05  # the mask token's embedding is small (see mask_embedding)
    bias_std: float = 0.3       # Dream q/k biases (times qk_gain)
    v_bias_std: float = 0.05    # Dream v bias: small, or every position shares it
    norm_jitter: float = 0.1    # norm weights ~ 1 + jitter * N(0, 1)


_WORD = re.compile(r"\u0120[a-z]{2,}")  # "Ġword": a space-prefixed lowercase word


def favored_token_ids(vocab: Vocab, n: int) -> np.ndarray:
    """The first ``n`` space-prefixed lowercase word tokens (BPE ids follow merge order, so
    these are the most frequent words: " the", " in", " of", ...), plus "," and "."."""
    ids = [i for i, t in enumerate(vocab.tokens[:49152]) if _WORD.fullmatch(t)][:n]
    for punct in (",", "."):
        if punct in vocab.tokens:
            ids.append(vocab.tokens.index(punct))
    return np.asarray(sorted(set(ids)), dtype=np.int64)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float, dtype) -> np.ndarray:
    """N(0, std^2) in ``dtype``, generated in row chunks to bound float32 temporaries."""
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(shape[0], -1)
    step = max(1, (1 << 22) // max(1, flat.shape[1]))
    for r in range(0, shape[0], step):
        chunk = rng.standard_normal((min(step, shape[0] - r), flat.shape[1]), dtype=np.float32)
        chunk *= np.float32(std)
        flat[r:r + step] = chunk
    return out


def mask_embedding(d: Dims, style: WeightStyle, seed: int) -> np.ndarray:
    """The mask token's input embedding: small, so that at a masked position the residual
    stream is what attention gathered from the context, not a vector every masked
    position shares (which would make them all predict the same tokens)."""
    rng = _rng(seed, "mask_embedding")
    return (style.mask_embd_scale * rng.standard_normal(d.n_embd)).astype(np.float32)


def _rope_pair_gain(spec: ArchSpec, d: Dims, style: WeightStyle, n_heads: int) -> np.ndarray:
    """Per q/k row factor putting more weight on the fast-rotating RoPE dimensions, so that
    attention scores change from one position to the next (with rope bases of 5e5-1e6 most
    dimensions barely rotate over a short sequence, and neighbours would all agree).
    Rows are rescaled so the total q/k variance is unchanged."""
    hd = d.head_dim
    pair = np.arange(hd) // 2 if not spec.rope_neox else np.arange(hd) % (hd // 2)
    g = np.where(pair < max(1, hd // 8), style.rope_hf_boost, 1.0)
    g = g / np.sqrt((g * g).mean())
    return np.tile(g, n_heads)


def make_tensor(name: str, shape: tuple[int, ...], spec: ArchSpec, d: Dims, vocab: Vocab,
                style: WeightStyle, seed: int, dtype) -> np.ndarray:
    """One tensor. 1-D tensors (norms, biases) are always float32, as the converter keeps
    them; the MoE router too. Matrices are ``dtype`` (float16 or float32)."""
    rng = _rng(seed, name)
    kind = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
    f32 = np.float32
    if kind in ("attn_norm", "ffn_norm", "output_norm"):
        return (1.0 + style.norm_jitter * rng.standard_normal(shape)).astype(f32)
    if kind in ("attn_q_norm", "attn_k_norm"):
        # q/k are RMS-normalised per head; the norm weight sets their scale
        return (style.qk_gain * (1.0 + style.norm_jitter * rng.standard_normal(shape))).astype(f32)
    if name.endswith(".bias"):
        std = style.v_bias_std if kind == "attn_v" else style.bias_std * style.qk_gain
        return (std * rng.standard_normal(shape)).astype(f32)
    if kind == "token_embd":
        out = _normal(rng, shape, 1.0, dtype)
        out[vocab.ids["mask"]] = mask_embedding(d, style, seed)
        return out
    if kind in ("attn_q", "attn_k"):
        gain = 1.0 if spec.qk_norm else style.qk_gain
        w = _normal(rng, shape, gain / np.sqrt(d.n_embd), dtype)
        n_heads = d.n_head if kind == "attn_q" else d.n_head_kv
        w *= _rope_pair_gain(spec, d, style, n_heads)[:, None].astype(dtype)
        return w
    if kind == "attn_v":
        w = _normal(rng, shape, 1.0 / np.sqrt(d.n_embd), np.float32)
        if name == "blk.0.attn_v.weight":
            # masks carry no information: their value vector in the first layer is zero
            norm_w = make_tensor("blk.0.attn_norm.weight", (d.n_embd,), spec, d, vocab, style,
                                 seed, dtype)
            m = mask_embedding(d, style, seed).astype(np.float64) * norm_w
            m /= np.linalg.norm(m)
            w -= np.outer(w @ m, m).astype(np.float32)
        return w.astype(dtype)
    if kind == "attn_output":
        return _normal(rng, shape, style.attn_gain / np.sqrt(d.n_q), dtype)
    if kind in ("ffn_gate", "ffn_up", "ffn_gate_exps", "ffn_up_exps"):
        return _normal(rng, shape, 1.0 / np.sqrt(d.n_embd), dtype)
    if kind == "ffn_down":
        return _normal(rng, shape, 2.0 * style.ffn_gain / np.sqrt(d.n_ff), dtype)
    if kind == "ffn_down_exps":
        return _normal(rng, shape, 2.0 * style.ffn_gain / np.sqrt(d.n_ff_exp), dtype)
    if kind == "ffn_gate_inp":
        return _normal(rng, shape, style.router_gain / np.sqrt(d.n_embd), np.float32)
    if kind == "output":
        row_std = np.full(d.n_vocab, style.logit_std, dtype=np.float32)
        row_std[favored_token_ids(vocab, style.n_favored)] *= style.favored_boost
        types = np.asarray(vocab.token_types)
        row_std[(types == CONTROL) | (types == UNUSED)] = 0.0
        out = _normal(rng, shape, 1.0 / np.sqrt(d.n_embd), dtype)
        out *= row_std[:, None].astype(dtype)
        return out
    raise ValueError(f"no initialiser for tensor {name}")
