"""What each diffusion architecture needs in a GGUF, as llama.cpp's converter writes it.

Sources (llama.cpp tree pinned by the build, read-only):
- metadata: ``conversion/llada.py`` (LLaDAModel, LLaDAMoEModel), ``conversion/dream.py``
  (DreamModel), ``conversion/qwen.py`` (RND1Model -> Qwen2MoeModel), all on top of
  ``TextModel.set_gguf_parameters`` in ``conversion/base.py``;
- tensors/hparams: ``src/models/{llada,dream,llada-moe,rnd1}.cpp`` (load_arch_hparams,
  load_arch_tensors) and ``create_tensor_qkv`` in ``src/llama-model.cpp``.

Values that do not depend on the model's size (context length, rope base, norm epsilon,
expert routing counts of the real checkpoint) are the real models' ``config.json`` values.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ArchSpec:
    arch: str                      # general.architecture
    real_model: str                # the checkpoint the metadata imitates
    context_length: int            # config.json max_position_embeddings / max_sequence_length
    rope_freq_base: float          # config.json rope_theta
    rms_eps: float                 # config.json rms_norm_eps
    shift_logits: bool | None      # diffusion.shift_logits; None = converter does not write it
    write_vocab_size: bool         # LLaDAModel: add_vocab_size
    write_rope_dims: bool          # LLaDAModel: add_rope_dimension_count
    write_head_dim: bool           # TextModel: key_length/value_length when config has head_dim
    qkv_bias: bool                 # Dream (Qwen2.5): q/k/v biases
    qk_norm: bool                  # LLaDA-MoE, RND1 (Qwen3-MoE): attn_q_norm / attn_k_norm
    moe: bool
    rope_neox: bool                # llama_model_rope_type: LLaDA NORM, the others NEOX
    write_expert_ff: bool          # <arch>.expert_feed_forward_length
    # defaults for the generated (tiny) model, as ratios of / offsets from n_embd
    n_head: int = 4
    n_head_kv: int = 4
    ff_mult: float = 3.0           # n_ff = ff_mult * n_embd (rounded up to 32)
    head_dim_mult: float | None = None  # head_dim = head_dim_mult * n_embd / n_head (RND1: 2)
    n_expert: int = 0
    n_expert_used: int = 0
    ff_exp_mult: float = 0.0       # n_ff_exp = ff_exp_mult * n_embd (rounded up to 32)


ARCHS: dict[str, ArchSpec] = {
    # GSAI-ML/LLaDA-8B-Instruct: d_model 4096, n_heads 32 = n_kv_heads, mlp_hidden_size 12288,
    # max_sequence_length 4096, rope_theta 500000, rms_norm_eps 1e-5, vocab 126464.
    "llada": ArchSpec(
        arch="llada", real_model="GSAI-ML/LLaDA-8B-Instruct",
        context_length=4096, rope_freq_base=500000.0, rms_eps=1e-5,
        shift_logits=False, write_vocab_size=True, write_rope_dims=True, write_head_dim=False,
        qkv_bias=False, qk_norm=False, moe=False, rope_neox=False, write_expert_ff=False,
        n_head=4, n_head_kv=4, ff_mult=3.0),
    # Dream-org/Dream-v0-Instruct-7B (Qwen2.5-7B): hidden 3584, 28 heads / 4 kv heads,
    # intermediate 18944, max_position_embeddings 131072, rope_theta 1e6, rms_norm_eps 1e-6.
    "dream": ArchSpec(
        arch="dream", real_model="Dream-org/Dream-v0-Instruct-7B",
        context_length=131072, rope_freq_base=1000000.0, rms_eps=1e-6,
        shift_logits=None, write_vocab_size=False, write_rope_dims=False, write_head_dim=False,
        qkv_bias=True, qk_norm=False, moe=False, rope_neox=True, write_expert_ff=False,
        n_head=4, n_head_kv=2, ff_mult=16.0 / 3.0),
    # inclusionAI/LLaDA-MoE-7B-A1B-Instruct: hidden 2048, 16 heads = kv heads, 64 experts,
    # 8 used, expert_intermediate_size 1024, dense_intermediate_size 8192,
    # max_position_embeddings 8192, rope_theta 50000, rms_norm_eps 1e-5.
    "llada-moe": ArchSpec(
        arch="llada-moe", real_model="inclusionAI/LLaDA-MoE-7B-A1B-Instruct",
        context_length=8192, rope_freq_base=50000.0, rms_eps=1e-5,
        shift_logits=False, write_vocab_size=False, write_rope_dims=False, write_head_dim=False,
        qkv_bias=False, qk_norm=True, moe=True, rope_neox=True, write_expert_ff=True,
        n_head=4, n_head_kv=4, ff_mult=4.0, n_expert=8, n_expert_used=2, ff_exp_mult=0.5),
    # radicalnumerics/RND1-Base-0910 (Qwen3-30B-A3B): hidden 2048, 32 heads / 4 kv heads,
    # head_dim 128 (!= 2048/32), 128 experts, 8 used, moe_intermediate_size 768,
    # intermediate 6144, max_position_embeddings 40960, rope_theta 1e6, rms_norm_eps 1e-6.
    "rnd1": ArchSpec(
        arch="rnd1", real_model="radicalnumerics/RND1-Base-0910",
        context_length=40960, rope_freq_base=1000000.0, rms_eps=1e-6,
        shift_logits=None, write_vocab_size=False, write_rope_dims=False, write_head_dim=True,
        qkv_bias=False, qk_norm=True, moe=True, rope_neox=True, write_expert_ff=True,
        n_head=4, n_head_kv=2, ff_mult=3.0, head_dim_mult=2.0, n_expert=8, n_expert_used=2,
        ff_exp_mult=0.5),
}


def round_up(x: float, m: int = 32) -> int:
    return max(m, int(-(-int(round(x)) // m) * m))


@dataclass(frozen=True)
class Sizes:
    """A model's layer sizes: with the vocabulary size, what its tensor shapes follow from."""
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int

    def sizes(self) -> dict[str, int]:
        """The size fields by name (of a Sizes or any subclass)."""
        return {f.name: getattr(self, f.name) for f in fields(Sizes)}


@dataclass(frozen=True)
class Dims(Sizes):
    """Sizes and the vocabulary size: every tensor shape (``tensor_shapes``)."""
    n_vocab: int

    @property
    def n_q(self) -> int:
        return self.n_head * self.head_dim

    @property
    def n_kv(self) -> int:
        return self.n_head_kv * self.head_dim


def tensor_shapes(spec: ArchSpec, d: Dims) -> dict[str, tuple[int, ...]]:
    """Every tensor the llama.cpp loader creates for this arch (numpy/PyTorch order:
    GGUF reverses it, so ``(n_vocab, n_embd)`` is ggml ``{n_embd, n_vocab}``)."""
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (d.n_vocab, d.n_embd)}
    for i in range(d.n_layer):
        p = f"blk.{i}."
        shapes[p + "attn_norm.weight"] = (d.n_embd,)
        shapes[p + "attn_q.weight"] = (d.n_q, d.n_embd)
        shapes[p + "attn_k.weight"] = (d.n_kv, d.n_embd)
        shapes[p + "attn_v.weight"] = (d.n_kv, d.n_embd)
        if spec.qkv_bias:
            shapes[p + "attn_q.bias"] = (d.n_q,)
            shapes[p + "attn_k.bias"] = (d.n_kv,)
            shapes[p + "attn_v.bias"] = (d.n_kv,)
        if spec.qk_norm:
            shapes[p + "attn_q_norm.weight"] = (d.head_dim,)
            shapes[p + "attn_k_norm.weight"] = (d.head_dim,)
        shapes[p + "attn_output.weight"] = (d.n_embd, d.n_q)
        shapes[p + "ffn_norm.weight"] = (d.n_embd,)
        if spec.moe:
            shapes[p + "ffn_gate_inp.weight"] = (d.n_expert, d.n_embd)
            shapes[p + "ffn_gate_exps.weight"] = (d.n_expert, d.n_ff_exp, d.n_embd)
            shapes[p + "ffn_up_exps.weight"] = (d.n_expert, d.n_ff_exp, d.n_embd)
            shapes[p + "ffn_down_exps.weight"] = (d.n_expert, d.n_embd, d.n_ff_exp)
        else:
            shapes[p + "ffn_gate.weight"] = (d.n_ff, d.n_embd)
            shapes[p + "ffn_up.weight"] = (d.n_ff, d.n_embd)
            shapes[p + "ffn_down.weight"] = (d.n_embd, d.n_ff)
    shapes["output_norm.weight"] = (d.n_embd,)
    shapes["output.weight"] = (d.n_vocab, d.n_embd)
    return shapes
