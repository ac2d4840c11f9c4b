"""The generated diffusion test models: metadata as llama.cpp's converter writes it,
deterministic bytes, the cache, peaked logits, and a real run through llama-diffusion-cli.

Only the tiny presets are generated here (about 0.5 s and 21 MB each); the bench presets
are left to benchmarks.
"""
from __future__ import annotations

import os
import subprocess

import gguf
import jinja2
import numpy as np
import pytest

from hoshikage.testing import diffusion_models as dm
from hoshikage.testing import ensure_test_model, llama_tool, write_diffusion_gguf
from hoshikage.testing._vocab import MASK_TOKEN
from hoshikage.gguf_file import read_gguf

ARCHS = ("llada", "dream", "llada-moe", "rnd1")
N_BASE = 49152  # SmolLM2's vocabulary

# keys under "<arch>." that the converter writes for each family (see _archs.py)
COMMON_KEYS = {"block_count", "context_length", "embedding_length", "feed_forward_length",
               "attention.head_count", "attention.head_count_kv", "rope.freq_base",
               "attention.layer_norm_rms_epsilon", "attention.causal"}
ARCH_KEYS = {
    "llada": COMMON_KEYS | {"vocab_size", "rope.dimension_count"},
    "dream": COMMON_KEYS,
    "llada-moe": COMMON_KEYS | {"expert_count", "expert_used_count", "expert_feed_forward_length"},
    "rnd1": COMMON_KEYS | {"expert_count", "expert_used_count", "expert_feed_forward_length",
                           "attention.key_length", "attention.value_length"},
}
SHIFT_LOGITS = {"llada": False, "llada-moe": False, "dream": None, "rnd1": None}  # None: absent
TEMPLATE_MARKERS = {"llada": "<|start_header_id|>", "dream": "<|im_start|>",
                    "llada-moe": "<role>HUMAN</role>", "rnd1": "<|im_start|>"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("diffusion_models")


@pytest.fixture(scope="module")
def models(model_dir):
    """The four tiny presets, generated once for this module."""
    return {arch: ensure_test_model(f"{arch}-tiny", model_dir) for arch in ARCHS}


@pytest.fixture(scope="module")
def contents(models):
    return {arch: read_gguf(path) for arch, path in models.items()}


def test_fast_reader_agrees_with_gguf_reader(models, contents):
    """gguf.GGUFReader is the reference but takes ~4 s per file (it makes a numpy view of
    each of the ~98k vocabulary strings), so the other tests use hoshikage.gguf_file,
    checked here against it on one model (llama.cpp itself loads all four further down)."""
    reader = gguf.GGUFReader(str(models["llada-moe"]))
    fast = contents["llada-moe"]
    assert {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")} == fast.kv
    assert {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors} == {
        n: t.shape for n, t in fast.tensors.items()}
    for t in reader.tensors[:3] + reader.tensors[-3:]:
        data = np.asarray(t.data, dtype=np.float32).reshape(fast.tensor(t.name).shape)
        assert np.array_equal(data, fast.tensor(t.name))


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata(contents, arch):
    kv = contents[arch].kv
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert kv["general.architecture"] == arch
    assert "random weights, NOT a real model" in kv["general.name"]
    assert {k.split(".", 1)[1] for k in kv if k.startswith(arch + ".")} == ARCH_KEYS[arch]
    assert kv[f"{arch}.attention.causal"] is False
    assert kv.get("diffusion.shift_logits") is SHIFT_LOGITS[arch]
    assert kv[f"{arch}.embedding_length"] == 96 and kv[f"{arch}.block_count"] == 2

    # tokenizer: SmolLM2's BPE plus this family's control tokens
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "smollm"
    assert len(kv["tokenizer.ggml.merges"]) == 48900
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(tokens) == len(types) == 49216 and len(set(tokens)) == len(tokens)  # 64 * 769
    assert tokens[-1].startswith("<|reserved_")
    mask = kv["tokenizer.ggml.mask_token_id"]
    assert tokens[mask] == MASK_TOKEN and types[mask] == gguf.TokenType.CONTROL
    assert all(t == gguf.TokenType.CONTROL for t in types[N_BASE:])
    for role in ("bos", "eos", "padding", "eot"):
        assert 0 <= kv[f"tokenizer.ggml.{role}_token_id"] < len(tokens)
        assert types[kv[f"tokenizer.ggml.{role}_token_id"]] == gguf.TokenType.CONTROL
    assert kv["tokenizer.ggml.add_bos_token"] is (arch == "llada")
    assert TEMPLATE_MARKERS[arch] in kv["tokenizer.chat_template"]
    if arch == "llada":
        assert kv["llada.vocab_size"] == len(tokens)
        assert kv["llada.rope.dimension_count"] == 96 // kv["llada.attention.head_count"]

    # tensors: shapes follow the vocabulary, MoE/bias/q-k-norm tensors where llama.cpp wants them
    tensors = contents[arch].tensors
    assert list(tensors["token_embd.weight"].shape) == [96, len(tokens)]
    assert list(tensors["output.weight"].shape) == [96, len(tokens)]
    assert ("blk.0.attn_q.bias" in tensors) is (arch == "dream")
    assert ("blk.1.attn_q_norm.weight" in tensors) is (arch in ("llada-moe", "rnd1"))
    if arch in ("llada-moe", "rnd1"):
        n_expert = kv[f"{arch}.expert_count"]
        assert kv[f"{arch}.expert_used_count"] < n_expert
        assert list(tensors["blk.0.ffn_gate_exps.weight"].shape) == [
            96, kv[f"{arch}.expert_feed_forward_length"], n_expert]
    else:
        assert "blk.0.ffn_gate.weight" in tensors
    if arch == "rnd1":  # head_dim != n_embd / n_head, as in Qwen3-30B-A3B
        assert kv["rnd1.attention.key_length"] * kv["rnd1.attention.head_count"] != 96
        assert list(tensors["blk.0.attn_q.weight"].shape) == [
            96, kv["rnd1.attention.key_length"] * kv["rnd1.attention.head_count"]]


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_renders_to_special_tokens(contents, arch):
    kv = contents[arch].kv
    tokens = kv["tokenizer.ggml.tokens"]
    bos = tokens[kv["tokenizer.ggml.bos_token_id"]]
    text = jinja2.Template(kv["tokenizer.chat_template"]).render(
        messages=[{"role": "user", "content": "Hello"}], add_generation_prompt=True, bos_token=bos)
    assert "Hello" in text
    specials = {t for t, ty in zip(tokens, kv["tokenizer.ggml.token_type"])
                if ty == gguf.TokenType.CONTROL and t.startswith("<") and t in text}
    assert specials, text
    if arch == "llada":
        assert text.startswith(bos + "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>")
        assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    if arch == "dream":
        assert text.endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")


def test_same_parameters_same_bytes(models, tmp_path):
    again = write_diffusion_gguf(tmp_path / "again.gguf", "llada")  # = preset llada-tiny
    assert again.read_bytes() == models["llada"].read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.gguf"]  # no temporary file left
    # the seed reaches the tensors
    p0, p1 = (dm.resolve_params("llada", seed=s) for s in (0, 1))
    vocab = dm.build_vocab("llada")
    dims = dm.Dims(n_vocab=vocab.size, **p0.sizes())
    shapes = dm.tensor_shapes(dm.ARCHS["llada"], dims)
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_norm.weight"):
        shape = shapes[name]
        t0, t1 = (dm.make_tensor(name, shape, dm.ARCHS["llada"], dims, vocab, p.style, p.seed,
                                 np.float16) for p in (p0, p1))
        assert not np.array_equal(t0, t1), name


def test_vocab_padding(tmp_path):
    pad_to = N_BASE + 5 + 300
    kv = read_gguf(write_diffusion_gguf(tmp_path / "p.gguf", "llada", n_embd=16,
                                       n_vocab_pad_to=pad_to), tensors=False).kv
    tokens = kv["tokenizer.ggml.tokens"]
    assert len(tokens) == kv["llada.vocab_size"] == pad_to
    assert tokens[-300:] == [f"<|reserved_{i}|>" for i in range(300)]
    assert tokens[kv["tokenizer.ggml.mask_token_id"]] == MASK_TOKEN
    with pytest.raises(ValueError, match="n_vocab_pad_to"):
        write_diffusion_gguf(tmp_path / "q.gguf", "llada", n_embd=16, n_vocab_pad_to=1000)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown arch"):
        write_diffusion_gguf(tmp_path / "x.gguf", "llama")
    with pytest.raises(ValueError, match="not a mixture-of-experts"):
        write_diffusion_gguf(tmp_path / "x.gguf", "llada", n_expert=4)
    assert not list(tmp_path.iterdir())


def test_cache_generates_once_and_replaces_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSHIKAGE_CACHE_DIR", str(tmp_path))
    stale = tmp_path / "models" / "llada-tiny-000000000000.gguf"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    other = tmp_path / "models" / "llada-moe-tiny-000000000000.gguf"
    other.write_bytes(b"other preset")
    path = ensure_test_model("llada-tiny")
    assert path.parent == tmp_path / "models" and path.name.startswith("llada-tiny-")
    assert path == dm.cached_model_path("llada-tiny")
    assert not stale.exists() and other.exists()
    mtime = path.stat().st_mtime_ns
    assert ensure_test_model("llada-tiny") == path and path.stat().st_mtime_ns == mtime
    # the key covers the generator version
    monkeypatch.setattr(dm, "GENERATOR_VERSION", dm.GENERATOR_VERSION + 1)
    assert dm.cached_model_path("llada-tiny") != path
    with pytest.raises(KeyError, match="unknown test model"):
        ensure_test_model("llada-huge")


def test_command_line(models, model_dir, capsys):
    assert dm.main(["--out", str(model_dir)]) == 0  # already there: nothing is regenerated
    printed = capsys.readouterr().out.split()
    assert printed == [str(models[arch]) for arch in ARCHS]
    assert dm.main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in dm.PRESETS)


# --- a numpy forward pass of the dense archs: the logits are peaked and depend on position ---

def _forward(gg, tokens):
    kv = gg.kv
    arch = kv["general.architecture"]
    w = {name: gg.tensor(name) for name in gg.tensors}
    eps, base = kv[f"{arch}.attention.layer_norm_rms_epsilon"], kv[f"{arch}.rope.freq_base"]
    n_head, n_kv = kv[f"{arch}.attention.head_count"], kv[f"{arch}.attention.head_count_kv"]

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rope(x):  # LLaDA rotates adjacent pairs, Dream (Qwen2) the two halves
        half = x.shape[-1] // 2
        ang = np.arange(len(x))[:, None, None] * base ** (-np.arange(half) / half)
        c, s = np.cos(ang), np.sin(ang)
        a, b = (x[..., 0::2], x[..., 1::2]) if arch == "llada" else (x[..., :half], x[..., half:])
        ra, rb = a * c - b * s, a * s + b * c
        return np.stack([ra, rb], -1).reshape(x.shape) if arch == "llada" else np.concatenate([ra, rb], -1)

    x = w["token_embd.weight"][tokens]
    for i in range(kv[f"{arch}.block_count"]):
        p = f"blk.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q, k, v = (h @ w[p + f"attn_{n}.weight"].T + w.get(p + f"attn_{n}.bias", 0) for n in "qkv")
        hd = q.shape[1] // n_head
        q, k, v = q.reshape(len(x), n_head, hd), k.reshape(len(x), n_kv, hd), v.reshape(len(x), n_kv, hd)
        q, k = rope(q), np.repeat(rope(k), n_head // n_kv, 1)
        s = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(hd)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("hij,jhd->ihd", a, np.repeat(v, n_head // n_kv, 1)).reshape(len(x), -1)
        x = x + o @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "ffn_down.weight"].T
    return rms(x, w["output_norm.weight"]) @ w["output.weight"].T


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_logits_are_peaked_and_vary_by_position(contents, arch):
    kv = contents[arch].kv
    mask = kv["tokenizer.ggml.mask_token_id"]
    prompt = [19556, 28, 638, 359, 346, 1834, 47]  # "Hello, how are you today?"
    logits = _forward(contents[arch], np.array(prompt + [mask] * 25))
    masked = logits[len(prompt):]
    assert 2.0 < masked.std(-1).mean() < 6.0  # several units, not noise around 0
    top = np.sort(masked, -1)[:, -2:]
    probs = np.exp(masked - masked.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    p_max = probs.max(-1)
    assert p_max.max() > 0.3 and p_max.std() > 0.05  # confident somewhere, and unevenly so
    assert (top[:, 1] - top[:, 0]).mean() > 0.3
    argmax = masked.argmax(-1)
    assert len(set(argmax.tolist())) >= 8  # positions disagree
    types = np.array(kv["tokenizer.ggml.token_type"])
    assert (types[argmax] == gguf.TokenType.NORMAL).all()  # never mask / control tokens


# --- llama.cpp itself loads and runs every tiny preset --------------------------------------

DIFFUSION_CLI = llama_tool("llama-diffusion-cli")


@pytest.mark.skipif(DIFFUSION_CLI is None, reason="no llama.cpp build manifest with "
                    "llama-diffusion-cli (run build_llama.py)")
@pytest.mark.parametrize("preset", dm.TINY_PRESETS)
def test_llama_diffusion_cli_runs(preset, models):
    model = models[preset.removesuffix("-tiny")]
    schedule = (["--diffusion-block-length", "32"] if preset.startswith("llada")
                else ["--diffusion-eps", "0.001"])
    cmd = [str(DIFFUSION_CLI), "-m", str(model), "-p", "Hello", "-ub", "64", "-c", "64", "-b", "64",
           "--diffusion-steps", "8", *schedule, "--temp", "0", "--seed", "1", "-t", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LLAMA_LOG_COLORS": "0"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "diffusion_params: - mask_token_id" in log
    text = log.split("total time:")[-1]
    assert "Error" not in text
    words = text.split("\n", 1)[-1].split()
    assert len(set(words)) >= 5, text
