"""Grow a trained model without changing what it computes (numpy, no JAX).

A recipe stage with ``"grow": {"n_head_kv": 4, "n_ff": 384}`` starts from a wider copy of the
weights so far, whose forward pass (``training.jax_model.forward``) is the same function:

- ``n_head_kv`` (a multiple of the old one, dividing ``n_head``): each old kv head is copied
  ``new // old`` times, so query head ``h``, which read old kv head ``h // (n_head / old)``,
  now reads a copy of it, ``h // (n_head / new)``. Training can then let the copies differ.
- ``n_ff`` (at least the old one): new gate and up rows are drawn like ``init_params``'
  (Normal(0, 0.02)); the new ``ffn_down`` columns are zero, so the new units add nothing
  until training moves them.
- ``n_layer`` (at least the old one): new layers go on top, drawn by ``init_params`` but
  with zero ``attn_output`` and ``ffn_down``, so each adds nothing to the residual stream.

numpy only: ``make test`` checks it on llama.cpp without JAX installed.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import Config, init_params

GROWABLE = ("n_head_kv", "n_ff", "n_layer")


def grown_config(cfg: Config, grow: dict) -> Config:
    """``cfg`` with ``grow``'s dimensions; ValueError naming one that cannot grow so."""
    odd = sorted(set(grow) - set(GROWABLE))
    if odd:
        raise ValueError(f"grow: {', '.join(odd)} cannot grow (only {', '.join(GROWABLE)})")
    new = replace(cfg, **grow)
    if new.n_head_kv % cfg.n_head_kv or cfg.n_head % new.n_head_kv:
        raise ValueError(f"grow: n_head_kv {new.n_head_kv} must be a multiple of {cfg.n_head_kv} "
                         f"and divide n_head {cfg.n_head}")
    for dim in ("n_ff", "n_layer"):
        if getattr(new, dim) < getattr(cfg, dim):
            raise ValueError(f"grow: {dim} {getattr(new, dim)} is below the model's {getattr(cfg, dim)}")
    return new


def grow_params(cfg: Config, params: dict[str, np.ndarray], grow: dict,
                seed: int) -> tuple[Config, dict[str, np.ndarray]]:
    """(grown config, grown float32 params); the same forward function as ``params``."""
    new = grown_config(cfg, grow)
    rng = np.random.default_rng(seed)
    rep, extra = new.n_head_kv // cfg.n_head_kv, new.n_ff - cfg.n_ff
    out = {}
    for name, v in params.items():
        v = np.asarray(v, np.float32)
        leaf = name.split(".", 2)[-1]
        if leaf in ("attn_k.weight", "attn_v.weight", "attn_k.bias", "attn_v.bias") and rep > 1:
            heads = v.reshape(cfg.n_head_kv, cfg.head_dim, *v.shape[1:])
            v = np.repeat(heads, rep, axis=0).reshape(new.n_head_kv * cfg.head_dim, *v.shape[1:])
        elif leaf in ("ffn_gate.weight", "ffn_up.weight") and extra:
            v = np.concatenate([v, 0.02 * rng.standard_normal((extra, v.shape[1]), np.float32)])
        elif leaf == "ffn_down.weight" and extra:
            v = np.concatenate([v, np.zeros((v.shape[0], extra), np.float32)], axis=1)
        out[name] = v
    if new.n_layer > cfg.n_layer:  # new layers on top, adding nothing to the residual stream
        fresh = init_params(new, seed)
        for name, v in fresh.items():
            if name.startswith("blk.") and int(name.split(".")[1]) >= cfg.n_layer:
                out[name] = np.zeros_like(v) if name.endswith(("attn_output.weight", "ffn_down.weight")) else v
    return new, out
