"""The training batches: the first stages' streams are unchanged by the task-mix options, and
weights set the mix (numpy only, no JAX)."""
from __future__ import annotations

import hashlib
import random

from training.data import make_batch, vocab_ids
from training.tasks import TRAIN_ONLY_TASKS, TASKS
from training.train import FIRST_TASKS, RECIPES


def _digest(arch: str, tasks) -> str:
    ids, rng, h = vocab_ids(arch), random.Random("train:x:0"), hashlib.sha256()
    for _ in range(40):
        b = make_batch(ids, rng, 32, tasks)
        for a in (b.tokens, b.prompt_len, b.length):
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def test_first_stages_draw_the_batches_they_were_trained_on():
    # Digests of make_batch before `three` was redesigned (commit 5b28418, default tasks):
    # stages 0-3 of the committed recipes must still see exactly those batches.
    assert _digest("llada", FIRST_TASKS) == "cee9e9dccce200a5"
    assert _digest("dream", FIRST_TASKS) == "9135fba49c024498"


def test_weights_set_the_task_mix():
    ids, rng = vocab_ids("llada"), random.Random(0)
    counts = {"words": 0, "add": 0}
    for _ in range(60):
        b = make_batch(ids, rng, 32, {"words": 1.0, "add": 3.0})
        for row, lp in zip(b.tokens, b.prompt_len):
            counts["add" if b"+" in bytes(row[:lp].astype("uint8")) else "words"] += 1
    assert 2.4 < counts["add"] / counts["words"] < 3.7, counts


def test_recipes_name_only_known_tasks():
    known = set(TASKS) | set(TRAIN_ONLY_TASKS)
    for r in RECIPES.values():
        for st in [r, *r["then"]]:
            assert set(st.get("tasks", FIRST_TASKS)) <= known
    assert set(RECIPES["llada-tasks"]["then"][-1]["tasks"]) >= set(TASKS)  # the last stage: every eval task


def test_sorted_three_keeps_the_retired_task_s_items():
    rng_a, rng_b = random.Random(5), random.Random(5)
    for _ in range(100):
        new, old = TASKS["three"].draw(rng_a), TRAIN_ONLY_TASKS["three_any"].draw(rng_b)
        assert set(new.answers) <= set(old.answers)     # the same triples, sorted ones only
        assert all(a.split(", ") == sorted(a.split(", ")) for a in new.answers)
        assert new.prompt.replace(", sorted", "") == old.prompt


def _recipe_config(name: str):
    """The recipe's first-stage shape (training.config.Config) of model ``name``."""
    from training.config import Config

    r = RECIPES[name]
    return Config(r["arch"], vocab_ids(r["arch"]).n_vocab, r["n_embd"], r["n_layer"], r["n_head"],
                  r["n_head_kv"], r["n_ff"])


def test_resume_reads_a_committed_gguf_and_refuses_another_recipe_s():
    import pytest

    from hoshikage.trained import trained_model_path
    from training.train import _resume

    params, hist, seconds = _resume(str(trained_model_path("llada-tasks")), 3800, _recipe_config("llada-tasks"))
    assert params["token_embd.weight"].shape == (320, 96) and hist == [] and seconds == 0.0
    with pytest.raises(ValueError, match="does not hold the tensors of this recipe"):
        _resume(str(trained_model_path("dream-tasks")), 3800, _recipe_config("llada-tasks"))


def test_three_banned_always_bans_an_item_and_accepts_only_answers_without_it():
    import itertools

    from training.tasks import CATEGORIES

    rng = random.Random(3)
    for _ in range(100):
        it = TRAIN_ONLY_TASKS["three_banned"].draw(rng)
        head, _, banned = it.prompt.partition(", sorted, no ")
        items = [x for x in CATEGORIES[head.removeprefix("3 ")] if x != banned]
        assert banned and len(items) == len(CATEGORIES[head.removeprefix("3 ")]) - 1
        assert set(it.answers) == {", ".join(c) for c in itertools.combinations(sorted(items), 3)}


def test_growing_a_trained_model_keeps_its_logits(tmp_path, native_build):
    """training.grow on the committed dream-tasks (grouped kv heads 2 -> 4, n_ff 256 -> 384,
    4 -> 5 layers):
    llama.cpp's logits of the grown file equal the original's on a masked canvas."""
    import numpy as np
    import pytest

    import hoshikage as hk
    from hoshikage.gguf_file import read_header
    from hoshikage.testing.diffusion_models import write_diffusion_gguf
    from hoshikage.trained import trained_model_path
    from training.data import prompt_ids
    from training.grow import grow_params

    ids, cfg = vocab_ids("dream"), _recipe_config("dream-tasks")
    src = trained_model_path("dream-tasks")
    h = read_header(src)
    new, grown = grow_params(cfg, {k: np.asarray(h.tensor(k), np.float32) for k in h.tensors},
                             {"n_head_kv": 4, "n_ff": 384, "n_layer": 5}, seed=1)
    assert "blk.4.attn_q.weight" in grown and grown["blk.0.attn_k.weight"].shape == (96, 96) and grown["blk.0.ffn_down.weight"].shape == (96, 384)
    assert new.n_layer == 5
    out = write_diffusion_gguf(tmp_path / "grown.gguf", "dream", n_embd=new.n_embd, n_layer=new.n_layer,
                               n_head=new.n_head, n_head_kv=new.n_head_kv, n_ff=new.n_ff, dtype="f16",
                               vocab="bytes", tensors=grown)
    canvas = np.asarray(prompt_ids(ids, "3 metals, sorted, no lead") + [ids.mask] * 40, np.int32)

    def logits(path):
        with hk.Model(path) as m, hk.Context(m, n_ctx=96, n_ubatch=96) as ctx:
            ctx.set_causal_attn(False)
            ctx.decode(canvas, logits="all", pos=0)
            return np.array(ctx.logits()[:len(canvas)])

    before, after = logits(src), logits(out)
    assert np.abs(before - after).max() < 1e-3 * np.abs(before).max()
    assert (before.argmax(-1) == after.argmax(-1)).all()
    with pytest.raises(ValueError, match="n_head_kv 3 must be a multiple of 2"):
        grow_params(cfg, {}, {"n_head_kv": 3}, seed=1)
    with pytest.raises(ValueError, match="n_embd cannot grow"):
        grow_params(cfg, {}, {"n_embd": 128}, seed=1)


def test_three_first_prefers_the_first_allowed_triple_and_draws_like_three():
    from training.tasks import draw_three_banned_first, draw_three_first

    rng_a, rng_b = random.Random(11), random.Random(11)
    for i in range(200):
        first = (draw_three_banned_first if i % 2 else draw_three_first)(rng_a)
        plain = TASKS["three"].draw(rng_b) if i % 2 == 0 else TRAIN_ONLY_TASKS["three_banned"].draw(rng_b)
        assert first.prompt == plain.prompt and set(first.answers) == set(plain.answers)
        n = len(plain.answers)
        assert len(first.answers) == 2 * n and first.answers.count(plain.answers[0]) == n + 1
        assert plain.answers[0] == min(plain.answers)  # the alphabetically first allowed triple
