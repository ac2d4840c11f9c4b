"""The shape of one trained model (no JAX): what training.train, training.verify and the
GGUF resume check share."""
from __future__ import annotations

from dataclasses import dataclass

from hoshikage.testing._archs import ARCHS, Dims


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
