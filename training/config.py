"""The shape of one trained model and its initial weights (no JAX): what training.train,
training.verify, training.grow and the GGUF resume check share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hoshikage.testing._archs import ARCHS, Dims, tensor_shapes


@dataclass(frozen=True)
class Config:
    arch: str            # "llada" or "dream"
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def spec(self):
        return ARCHS[self.arch]

    def dims(self) -> Dims:
        return Dims(n_vocab=self.n_vocab, n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head,
                    n_head_kv=self.n_head_kv, head_dim=self.head_dim, n_ff=self.n_ff, n_expert=0,
                    n_expert_used=0, n_ff_exp=0)


def init_params(cfg: Config, seed: int) -> dict[str, np.ndarray]:
    """Normal(0, 0.02) matrices (output projections scaled by 1/sqrt(2 n_layer)), unit norms,
    zero biases; float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in tensor_shapes(cfg.spec, cfg.dims()).items():
        if name.endswith("norm.weight"):
            out[name] = np.ones(shape, np.float32)
        elif name.endswith(".bias"):
            out[name] = np.zeros(shape, np.float32)
        else:
            std = 0.02 / (np.sqrt(2 * cfg.n_layer) if name.endswith(("attn_output.weight", "ffn_down.weight")) else 1)
            out[name] = (std * rng.standard_normal(shape)).astype(np.float32)
    return out
