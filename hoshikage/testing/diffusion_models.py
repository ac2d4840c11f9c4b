"""Generate small diffusion-LLM GGUFs (LLaDA, Dream, LLaDA-MoE, RND1) for tests and benchmarks.

No model hub is reachable and no real diffusion weights exist on the machines Hoshikage is
tested on, so these files stand in for them. They are **random-weight test models, not
real models**: the metadata is what llama.cpp's converter writes for the real checkpoint
(architecture, hyper-parameter keys, non-causal attention, ``diffusion.shift_logits``, mask
token), the tokenizer is SmolLM2's real BPE vocabulary plus each family's special tokens and
chat template, and the weights are random but drawn so the logits are peaked (see
``_weights``). ``general.name`` says "random weights, NOT a real model".

    from hoshikage.testing import ensure_test_model, write_diffusion_gguf
    path = ensure_test_model("llada-tiny")          # cached under $HOSHIKAGE_CACHE_DIR/models
    write_diffusion_gguf("/tmp/d.gguf", "dream", n_embd=64, seed=3)

Command line: ``python -m hoshikage.testing.diffusion_models [--out DIR] [names...]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._archs import ARCHS, ArchSpec, Dims, Sizes, round_up, tensor_shapes
from ._vocab import Vocab, build_byte_vocab, build_vocab
from ._weights import WeightStyle, make_tensor

# Bump whenever the bytes written for the same parameters change: cached files regenerate.
GENERATOR_VERSION = 2

ARCH_NAMES = tuple(ARCHS)

# name -> keyword arguments of write_diffusion_gguf
PRESETS: dict[str, dict[str, Any]] = {
    "llada-tiny": {"arch": "llada"},
    "dream-tiny": {"arch": "dream"},
    "llada-moe-tiny": {"arch": "llada-moe"},
    "rnd1-tiny": {"arch": "rnd1"},
    # LLaDA-8B's real vocabulary size (126,464) at width 1024: a realistic sampling cost
    # (softmax / top-k over 126k logits per position) with a cheap transformer.
    "llada-bench": {"arch": "llada", "n_embd": 1024, "n_layer": 2, "n_head": 8,
                    "n_vocab_pad_to": 126464},
    # Dream-7B's real vocabulary size (Qwen2.5's 152,064).
    "dream-bench": {"arch": "dream", "n_embd": 1024, "n_layer": 2, "n_head": 8, "n_head_kv": 2,
                    "n_vocab_pad_to": 152064},
}
TINY_PRESETS = tuple(n for n in PRESETS if n.endswith("-tiny"))

CACHE_ENV = "HOSHIKAGE_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class ModelParams(Sizes):
    """Everything that determines a generated file's bytes (besides the tokenizer source)."""
    arch: str
    n_vocab_pad_to: int | None
    seed: int
    dtype: str
    style: WeightStyle

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


def resolve_params(arch: str, *, n_embd: int = 96, n_layer: int = 2, n_head: int | None = None,
                   n_head_kv: int | None = None, head_dim: int | None = None,
                   n_ff: int | None = None, n_expert: int | None = None,
                   n_expert_used: int | None = None, n_ff_exp: int | None = None,
                   n_vocab_pad_to: int | None = None, seed: int = 0, dtype: str = "f16",
                   style: WeightStyle | None = None) -> ModelParams:
    """Fill in the per-architecture defaults (ratios of the real checkpoint) and validate."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCH_NAMES)}")
    spec = ARCHS[arch]
    n_head = n_head or spec.n_head
    n_head_kv = n_head_kv or (n_head if spec.n_head_kv == spec.n_head else
                              max(1, n_head * spec.n_head_kv // spec.n_head))
    if head_dim is None:
        base = n_embd // n_head
        head_dim = int(base * spec.head_dim_mult) if spec.head_dim_mult else base
    if spec.moe:
        n_expert = n_expert or spec.n_expert
        n_expert_used = n_expert_used or spec.n_expert_used
        n_ff_exp = n_ff_exp or round_up(spec.ff_exp_mult * n_embd)
    else:
        if n_expert or n_expert_used or n_ff_exp:
            raise ValueError(f"{arch} is not a mixture-of-experts architecture")
        n_expert = n_expert_used = n_ff_exp = 0
    n_ff = n_ff or round_up(spec.ff_mult * n_embd)
    if dtype not in ("f16", "f32"):
        raise ValueError("dtype must be 'f16' or 'f32'")
    if n_layer < 1 or n_embd < 8:
        raise ValueError("need n_layer >= 1 and n_embd >= 8")
    if n_head % n_head_kv:
        raise ValueError(f"n_head={n_head} is not a multiple of n_head_kv={n_head_kv}")
    if head_dim % 2:
        raise ValueError(f"head_dim={head_dim} must be even (RoPE rotates pairs)")
    if not spec.write_head_dim and head_dim * n_head != n_embd:
        raise ValueError(f"{arch} needs n_embd ({n_embd}) == n_head * head_dim ({n_head} * {head_dim})")
    if spec.moe and not 0 < n_expert_used <= n_expert:
        raise ValueError("need 0 < n_expert_used <= n_expert")
    return ModelParams(arch=arch, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                       head_dim=head_dim, n_ff=n_ff, n_expert=n_expert, n_expert_used=n_expert_used,
                       n_ff_exp=n_ff_exp, n_vocab_pad_to=n_vocab_pad_to, seed=seed, dtype=dtype,
                       style=style or WeightStyle())


def _write_metadata(w, spec: ArchSpec, p: ModelParams, d: Dims, vocab: Vocab,
                    about: tuple[str, str] | None = None) -> None:
    """Keys in the order (and with the value types) the llama.cpp converter writes them.
    ``about`` replaces the random-weights (name, description)."""
    a = spec.arch
    # general.* (gguf-py Metadata), plus a plain statement of what this file is
    w.add_string("general.type", "model")
    name, description = about or (
        f"hoshikage-test-{a} (random weights, NOT a real model)",
        f"Randomly initialised {a} test model generated by hoshikage.testing; metadata "
        f"imitates {spec.real_model}, tokenizer is SmolLM2's. Its output is meaningless.")
    w.add_string("general.name", name)
    w.add_string("general.description", description)
    # TextModel.set_gguf_parameters (conversion/base.py)
    w.add_uint32(f"{a}.block_count", p.n_layer)
    w.add_uint32(f"{a}.context_length", spec.context_length)
    w.add_uint32(f"{a}.embedding_length", p.n_embd)
    w.add_uint32(f"{a}.feed_forward_length", p.n_ff)
    w.add_uint32(f"{a}.attention.head_count", p.n_head)
    w.add_uint32(f"{a}.attention.head_count_kv", p.n_head_kv)
    w.add_float32(f"{a}.rope.freq_base", spec.rope_freq_base)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", spec.rms_eps)
    if spec.moe:
        w.add_uint32(f"{a}.expert_count", p.n_expert)
        w.add_uint32(f"{a}.expert_used_count", p.n_expert_used)
    if spec.write_head_dim:
        w.add_uint32(f"{a}.attention.key_length", p.head_dim)
        w.add_uint32(f"{a}.attention.value_length", p.head_dim)
    w.add_uint32("general.file_type", 1 if p.dtype == "f16" else 0)  # MOSTLY_F16 / ALL_F32
    # per-architecture additions
    if spec.write_vocab_size:
        w.add_uint32(f"{a}.vocab_size", d.n_vocab)
    if spec.write_rope_dims:
        w.add_uint32(f"{a}.rope.dimension_count", p.head_dim)
    if spec.write_expert_ff:
        w.add_uint32(f"{a}.expert_feed_forward_length", p.n_ff_exp)
    w.add_bool(f"{a}.attention.causal", False)
    if spec.shift_logits is not None:
        w.add_bool("diffusion.shift_logits", spec.shift_logits)
    # tokenizer (_set_vocab_gpt2 + SpecialVocab)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", vocab.pre)
    w.add_array("tokenizer.ggml.tokens", vocab.tokens)
    w.add_array("tokenizer.ggml.token_type", vocab.token_types)
    w.add_array("tokenizer.ggml.merges", list(vocab.merges))
    w.add_uint32("tokenizer.ggml.bos_token_id", vocab.ids["bos"])
    w.add_uint32("tokenizer.ggml.eos_token_id", vocab.ids["eos"])
    w.add_uint32("tokenizer.ggml.eot_token_id", vocab.ids["eot"])
    w.add_uint32("tokenizer.ggml.padding_token_id", vocab.ids["pad"])
    w.add_uint32("tokenizer.ggml.mask_token_id", vocab.ids["mask"])
    w.add_bool("tokenizer.ggml.add_bos_token", vocab.add_bos)
    w.add_bool("tokenizer.ggml.add_eos_token", False)
    w.add_string("tokenizer.chat_template", vocab.chat_template)
    # provenance, ignored by llama.cpp
    w.add_uint32("hoshikage.testing.generator_version", GENERATOR_VERSION)
    w.add_string("hoshikage.testing.params", p.to_json())


def _build_named_vocab(arch: str, vocab: str, n_vocab_pad_to: int | None) -> Vocab:
    """The vocabulary ``vocab`` names: "smollm2" (SmolLM2's tokenizer) or "bytes" (trained models)."""
    if vocab == "bytes":
        return build_byte_vocab(arch) if n_vocab_pad_to is None else build_byte_vocab(arch, n_vocab_pad_to)
    if vocab == "smollm2":
        return build_vocab(arch, n_vocab_pad_to)
    raise ValueError(f"vocab must be 'smollm2' or 'bytes', not {vocab!r}")


def _add_tensors(w: Any, spec: ArchSpec, p: ModelParams, d: Dims, vocab: Vocab, seed: int,
                 np_dtype: type, tensors: dict[str, np.ndarray] | None) -> None:
    """Every tensor of ``spec`` in order: generated, or the caller's (shapes checked; matrices as
    ``np_dtype``, 1-D tensors as float32)."""
    for name, shape in tensor_shapes(spec, d).items():
        if tensors is None:
            arr = make_tensor(name, shape, spec, d, vocab, p.style, seed, np_dtype)
        else:
            arr = np.asarray(tensors[name])
            if arr.shape != shape:
                raise ValueError(f"tensor {name}: shape {arr.shape}, expected {shape}")
            arr = arr.astype(np.float32 if arr.ndim == 1 else np_dtype)
        w.add_tensor(name, arr)


def write_diffusion_gguf(path: str | os.PathLike[str], arch: str, *, n_embd: int = 96,
                         n_layer: int = 2, n_head: int | None = None,
                         n_head_kv: int | None = None, head_dim: int | None = None,
                         n_ff: int | None = None, n_expert: int | None = None,
                         n_expert_used: int | None = None, n_ff_exp: int | None = None,
                         n_vocab_pad_to: int | None = None, seed: int = 0, dtype: str = "f16",
                         style: WeightStyle | None = None, vocab: str = "smollm2",
                         tensors: dict[str, np.ndarray] | None = None,
                         about: tuple[str, str] | None = None) -> Path:
    """Write a random-weight diffusion GGUF of ``arch`` ("llada", "dream", "llada-moe",
    "rnd1") to ``path`` (atomically: a temporary file in the same folder, then a rename).

    Unset sizes follow the real checkpoint's ratios: heads 4 (Dream/RND1: 4 query / 2 kv
    heads), n_ff = 3 * n_embd (Dream 5.33x, LLaDA-MoE's dense size 4x), MoE archs 8 experts
    of which 2 are used, each n_embd / 2 wide; RND1's head_dim is twice n_embd / n_head as
    in Qwen3-30B-A3B. ``n_vocab_pad_to`` pads the vocabulary with ``<|reserved_N|>``
    control tokens to that size (LLaDA: 126464); by default it is padded to the next
    multiple of 64 (49,216), as real checkpoints pad their embedding matrices. That matters
    for speed: ggml's fast CPU GEMM (llamafile tinyBLAS) needs the output projection's row
    count to be a multiple of 4, and with 49,157 rows the output projection falls back to a
    ~10x slower dot-product loop. Same arguments, same bytes.

    Trained models (``training/``) pass ``vocab="bytes"`` (``build_byte_vocab``: 256 byte
    tokens + specials, 320 in all), their own ``tensors`` (name -> array in numpy order, as
    ``tensor_shapes``; matrices are stored as ``dtype``, 1-D tensors as float32) and
    ``about`` = (general.name, general.description)."""
    import gguf  # noqa: PLC0415 - keep `import hoshikage.testing` light

    p = resolve_params(arch, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                       head_dim=head_dim, n_ff=n_ff, n_expert=n_expert,
                       n_expert_used=n_expert_used, n_ff_exp=n_ff_exp,
                       n_vocab_pad_to=n_vocab_pad_to, seed=seed, dtype=dtype, style=style)
    spec = ARCHS[arch]
    vocab = _build_named_vocab(arch, vocab, n_vocab_pad_to)
    d = Dims(n_vocab=vocab.size, **p.sizes())
    np_dtype = np.float16 if dtype == "f16" else np.float32

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name in the same folder (so the rename is atomic); created by GGUFWriter with
    # the usual umask permissions, unlike mkstemp's 0600
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        w = gguf.GGUFWriter(tmp, spec.arch)
        _write_metadata(w, spec, p, d, vocab, about)
        _add_tensors(w, spec, p, d, vocab, seed, np_dtype, tensors)
        # ModelBase.prepare_metadata: size label from the parameter count, quantization version
        w.add_string("general.size_label", gguf.size_label(*w.get_total_parameter_count()))
        w.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- cache ------------------------------------------------------------------------------

def hoshikage_cache_root() -> Path:
    """The cache root shared with build_llama.py and hoshikage._ffi ($HOSHIKAGE_CACHE_DIR, ...)."""
    from .._ffi._loader import cache_dir

    return cache_dir()


def default_cache_dir() -> Path:
    """Where generated test models are kept: ``<cache root>/models``."""
    return hoshikage_cache_root() / "models"


def llama_tool(name: str) -> Path | None:
    """Path of a llama.cpp tool (e.g. ``llama-diffusion-cli``) from the current build
    manifest (``<cache root>/current.json`` -> ``hoshikage-build.json`` ``tools``), or None."""
    try:
        build_dir = Path(json.loads((hoshikage_cache_root() / "current.json").read_text())["build_dir"])
        tools = json.loads((build_dir / "hoshikage-build.json").read_text()).get("tools", {})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = tools.get(name)
    return Path(path) if path and Path(path).is_file() else None


def preset_params(name: str) -> ModelParams:
    if name not in PRESETS:
        raise KeyError(f"unknown test model {name!r}; presets: {', '.join(PRESETS)}")
    kw = dict(PRESETS[name])
    return resolve_params(kw.pop("arch"), **kw)


def cache_key(params: ModelParams) -> str:
    blob = f"v{GENERATOR_VERSION}:{params.to_json()}".encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cached_model_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``ensure_test_model(name, cache_dir)`` keeps the file (it may not exist yet)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{name}-{cache_key(preset_params(name))}.gguf"


def ensure_test_model(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of preset ``name``, generating it on first use. The file name carries a hash of
    the generator version and parameters, so a change regenerates it; older files of the
    same preset are removed then. Concurrent callers are safe (atomic rename of identical
    bytes)."""
    path = cached_model_path(name, cache_dir)
    if path.is_file():
        return path
    kw = dict(PRESETS[name])
    write_diffusion_gguf(path, kw.pop("arch"), **kw)
    stale = re.compile(re.escape(name) + r"-[0-9a-f]{12}\.gguf")
    for old in path.parent.glob(f"{name}-*.gguf"):
        if old != path and stale.fullmatch(old.name):
            old.unlink(missing_ok=True)
    return path


# --- command line -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hoshikage.testing.diffusion_models",
        description="Generate (or find in the cache) random-weight diffusion test GGUFs and "
                    "print their paths. Presets: " + ", ".join(PRESETS))
    ap.add_argument("names", nargs="*", help=f"presets (default: {' '.join(TINY_PRESETS)})")
    ap.add_argument("--out", metavar="DIR", help=f"folder for the files (default: ${CACHE_ENV}/models "
                                                 "or ~/.cache/hoshikage/models)")
    ap.add_argument("--list", action="store_true", help="list the presets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name in PRESETS:
            print(f"{name}\t{preset_params(name).to_json()}")
        return 0
    names = args.names or list(TINY_PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        ap.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    for name in names:
        t0 = time.perf_counter()
        path = ensure_test_model(name, args.out)
        print(path, flush=True)
        print(f"{name}: {path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
