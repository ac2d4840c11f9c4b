"""Token ids and training batches for the byte-level trained models (numpy, no JAX).

Token id ``b`` is byte ``b``; specials come from ``hoshikage.testing._vocab.build_byte_vocab``.
The chat templates are reproduced exactly as llama.cpp applies them (its built-in "llama3"
and "chatml" formats) and tokenizes them (BOS added for LLaDA); tests/trained checks that
against llama.cpp's own tokenizer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from hoshikage.testing._vocab import build_byte_vocab

from .tasks import CANVAS, TRAIN_ONLY_TASKS, TASKS

ALL_TASKS = {**TASKS, **TRAIN_ONLY_TASKS}
FULL_CANVAS_PROB = 0.15  # the share of full-canvas batches unless a stage sets its own


@dataclass(frozen=True)
class Ids:
    arch: str
    tokens: tuple[str, ...]
    bos: int
    eos: int
    mask: int
    add_bos: bool
    n_vocab: int

    def special(self, text: str) -> int:
        return self.tokens.index(text)


def vocab_ids(arch: str) -> Ids:
    v = build_byte_vocab(arch)
    return Ids(arch, tuple(v.tokens), v.ids["bos"], v.ids["eos"], v.ids["mask"], v.add_bos, v.size)


def text_ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def prompt_ids(ids: Ids, user: str) -> list[int]:
    """The chat-templated, tokenized prompt of one user message (generation prompt added)."""
    if ids.arch == "llada":  # llama3: header, trimmed content, eot; BOS from add_bos
        sh, eh, eot = (ids.special(t) for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
        out = [ids.bos] if ids.add_bos else []
        out += [sh] + text_ids("user") + [eh] + text_ids("\n\n" + user.strip()) + [eot]
        return out + [sh] + text_ids("assistant") + [eh] + text_ids("\n\n")
    ims, ime = ids.special("<|im_start|>"), ids.special("<|im_end|>")  # chatml
    return [ims] + text_ids("user\n" + user) + [ime] + text_ids("\n") + [ims] + text_ids("assistant\n")


@dataclass
class Batch:
    tokens: np.ndarray      # [B, T] int32: prompt, answer, eos padding (T <= CANVAS)
    prompt_len: np.ndarray  # [B] int32
    length: np.ndarray      # [B] int32: the canvas of this sample, prompt included (<= T)


def make_batch(ids: Ids, rng: random.Random, batch: int,
               tasks: tuple[str, ...] | dict[str, float] = tuple(TASKS),
               full_canvas_prob: float = FULL_CANVAS_PROB, slack: int = 10) -> Batch:
    """``batch`` samples, tasks drawn by weight (a tuple: uniformly), one accepted answer
    drawn uniformly per item.

    With probability ``full_canvas_prob`` every sample's canvas is ``CANVAS`` (what ``-ub 96``
    gives); otherwise each is the shortest that fits plus 0..``slack`` tokens (what a server's
    prompt + max_tokens gives), and the batch is only as wide as its longest canvas (rounded
    up to 16), which saves compute. A batch holds either long-prompt tasks only or the
    others only (in proportion to their weights), so short batches stay narrow."""
    weights = dict(tasks) if isinstance(tasks, dict) else dict.fromkeys(tasks, 1.0)
    full = rng.random() < full_canvas_prob
    long = [t for t in weights if ALL_TASKS[t].long_prompt]
    short = [t for t in weights if not ALL_TASKS[t].long_prompt]
    p_long = sum(weights[t] for t in long) / sum(weights.values())
    pool = long if long and (not short or rng.random() < p_long) else short
    uniform = len({weights[t] for t in pool}) == 1  # rng.choice: the streams of the first recipes

    def pick() -> str:
        return rng.choice(pool) if uniform else rng.choices(pool, [weights[t] for t in pool])[0]

    rows, lp, lt = [], [], []
    for _ in range(batch):
        item = ALL_TASKS[pick()].draw(rng)
        p = prompt_ids(ids, item.prompt)
        a = text_ids(rng.choice(item.answers))
        need = len(p) + len(a) + 1
        if need > CANVAS:
            raise ValueError(f"item {item.prompt!r} needs {need} > {CANVAS} tokens")
        rows.append(p + a)
        lp.append(len(p))
        lt.append(CANVAS if full else min(CANVAS, need + rng.randint(0, slack)))
    T = CANVAS if full else min(CANVAS, -(-max(lt) // 16) * 16)
    toks = np.full((batch, T), ids.eos, np.int32)
    for b, r in enumerate(rows):
        toks[b, :len(r)] = r
    return Batch(toks, np.asarray(lp, np.int32), np.asarray(lt, np.int32))
