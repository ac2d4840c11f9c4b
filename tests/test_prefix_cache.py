"""The prefix KV cache (issue 17): the twin, the cached rows, the parameter, the refusals."""
from __future__ import annotations

import numpy as np
import pytest

import hoshikage as hk
from hoshikage.errors import ParameterError
from hoshikage.generation.diffusion import diffuse
from hoshikage.generation.prefix_cache import MIN_ROWS, PrefixCache, twin_model
from hoshikage.gguf_file import read_header
from hoshikage.gguf_twin import TwinError, make_twin
from hoshikage.sampling import DiffusionParams, Schedule, plan_block_schedule
from hoshikage.testing.diffusion_models import ensure_test_model
from hoshikage.testing.reference import reference_diffusion

ARCHS = {"llada": "llada-tiny", "dream": "dream-tiny"}
TWINS = {"llada": "llama", "dream": "qwen2"}
CANVAS, BLOCK = 128, 32
# The re-decoded rows are not bit-identical to a full decode (ggml sums in another order for
# other row counts): at most this fraction of the largest logit apart (measured: under 0.4%),
# and the same argmax except at near-ties, where the two tokens' logits are closer than their
# differences (seen on the random-weight models: a margin of 0.011 against a difference of 0.044).
TOLERANCE = 0.02


def assert_close_with_same_argmax(rows: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(rows - want)
    assert diff.max() <= TOLERANCE * np.abs(want).max()
    got, best = rows.argmax(axis=1), want.argmax(axis=1)
    flips = np.flatnonzero(got != best)
    margin = want[flips, best[flips]] - want[flips, got[flips]]
    assert (margin <= diff[flips, best[flips]] + diff[flips, got[flips]]).all()  # near-ties only
    assert flips.size <= max(1, len(want) // 20)


@pytest.fixture(scope="module", params=sorted(ARCHS))
def model(request):
    with hk.Model(ensure_test_model(ARCHS[request.param])) as m:
        yield m


@pytest.fixture(scope="module")
def twin_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("twins")


def canvas_tokens(model, n_prompt: int, seed: int) -> np.ndarray:
    """A canvas half decided: a prompt, then tokens and masks mixed."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(100, model.n_vocab - 100, CANVAS).astype(np.int32)
    tokens[n_prompt:][rng.random(CANVAS - n_prompt) < 0.5] = model.mask_token
    return tokens


def full_logits(model, tokens: np.ndarray) -> np.ndarray:
    with hk.Context(model, n_ctx=CANVAS, n_batch=CANVAS, n_ubatch=CANVAS, n_threads=2) as ctx:
        ctx.set_causal_attn(False)
        ctx.decode(tokens, logits="all", pos=0)
        return ctx.logits()


def test_twin_is_the_same_file_under_the_autoregressive_name(model, twin_folder):
    twin = make_twin(model.path, twin_folder)
    src, dst = read_header(model.path), read_header(twin)
    assert dst.kv["general.architecture"] == TWINS[model.arch]
    assert {k.replace(model.arch + ".", "", 1) for k in src.kv} == \
        {k.replace(TWINS[model.arch] + ".", "", 1) for k in dst.kv}
    assert [(t.name, t.shape, t.offset) for t in src.tensors.values()] == \
        [(t.name, t.shape, t.offset) for t in dst.tensors.values()]
    assert src.size == dst.size and make_twin(model.path, twin_folder) == twin  # cached: made once


def test_the_same_model_under_another_path_finds_the_same_twin(model, twin_folder, tmp_path):
    """As the server's RAM-disk copy, made anew at each start, must."""
    import shutil

    copy = tmp_path / model.path.name
    shutil.copyfile(model.path, copy)
    assert make_twin(copy, twin_folder) == make_twin(model.path, twin_folder)


def test_twin_full_canvas_logits_equal_the_diffusion_graph_bit_for_bit(model, twin_folder):
    """Causal attention off, one ubatch, llama.cpp's own KV cache: the twin computes the same bits."""
    with hk.Model(make_twin(model.path, twin_folder)) as twin:
        assert not twin.is_diffusion
        for seed in range(3):
            tokens = canvas_tokens(model, 10 + 7 * seed, seed)
            assert np.array_equal(full_logits(twin, tokens), full_logits(model, tokens))


def test_cached_rows_match_the_full_decode_within_tolerance(model):
    """At each block's first step the cache decodes the whole canvas (bit-identical rows); its
    next steps re-decode the block and the suffix over the cached prefix: close, same argmax."""
    n_prompt = 40
    plan = plan_block_schedule(CANVAS, n_prompt, 12, BLOCK)
    shift = model.shift_logits
    with PrefixCache(model, canvas_length=CANVAS, blocks=plan.blocks, shift=shift, n_threads=2) as cache:
        blocks = [(s, e) for s, e in plan.blocks if e > s]  # the last block of a prompted canvas is empty
        for b, (start, _) in enumerate(blocks):
            tokens = canvas_tokens(model, n_prompt, 10 + b)
            tokens[start:] = model.mask_token
            need = start - int(shift)
            first, rows = cache.rows(tokens, need)
            assert first == 0
            reference = full_logits(model, tokens)
            assert np.array_equal(rows, reference)
            first, rows = cache.rows(tokens, need)  # the block's second step, same canvas
            assert first == min(need, CANVAS - MIN_ROWS) and rows.shape == (CANVAS - first, model.n_vocab)
            assert_close_with_same_argmax(rows, reference[first:])
        assert (cache.full_decodes, cache.partial_decodes) == (len(blocks), len(blocks))


def test_refresh_every_n_steps(model):
    plan = plan_block_schedule(CANVAS, 16, 12, BLOCK)
    with PrefixCache(model, canvas_length=CANVAS, blocks=plan.blocks, shift=model.shift_logits,
                     n_threads=2, refresh_every=2) as cache:
        tokens = canvas_tokens(model, 16, 0)
        firsts = [cache.rows(tokens, 16)[0] for _ in range(5)]
    cached = 16 - int(model.shift_logits)
    assert firsts == [0, cached, 0, cached, 0]


def block_params(**kw) -> dict:
    return {"steps": 12, "schedule": Schedule.BLOCK_BASED, "block_length": BLOCK, "temperature": 0.0, **kw}


def test_cache_off_is_the_reference_token_for_token(model):
    """cache=None (the default) keeps the exact reference: llama.cpp's own diffusion_generate."""
    assert DiffusionParams().cache is None
    params = DiffusionParams(**block_params(cache=None, early_stop=False))
    prompt = canvas_tokens(model, 16, 3)[:16].tolist()
    with hk.Context(model, n_ctx=CANVAS, n_batch=CANVAS, n_ubatch=CANVAS, n_threads=2) as ctx:
        expected = reference_diffusion(ctx, prompt, canvas_length=CANVAS, params=params,
                                       mask_token_id=model.mask_token, shift_logits=model.shift_logits)
        got = diffuse(model, ctx, prompt, canvas_length=CANVAS, params=params)
    assert got.tokens.tolist() == expected.tolist()


@pytest.mark.parametrize("extra", [{}, {"threshold": 0.9}, {"cache_refresh": 2}])
def test_generate_with_the_cache(model, extra):
    """Through generate(): every block denoised, alone or with threshold decoding and early stop."""
    out = hk.generate(model, prompt="Tell me a story.", max_tokens=40, seed=1,
                      diffusion=block_params(cache="prefix", **extra))
    assert out.params["cache"] == "prefix" and out.timings.steps > 0
    assert out.finish_reason in ("stop", "length")
    assert model.mask_token not in out.tokens


@pytest.mark.parametrize("bad, field", [
    ({"cache": "prefix", "schedule": Schedule.TIMESTEP_BASED}, "cache"),
    ({"cache": "prefix", "cfg_scale": 1.0}, "cache"),
    ({"cache": "suffix"}, "cache"),
    ({"cache": True}, "cache"),
    ({"cache": "prefix", "cache_refresh": -1}, "cache_refresh"),
])
def test_bad_combinations_are_refused(model, bad, field):
    with pytest.raises(ParameterError) as err:
        hk.generate(model, prompt="hi", max_tokens=16, diffusion={**block_params(), **bad})
    assert err.value.param == field


@pytest.mark.parametrize("name", ["llada-moe-tiny", "rnd1-tiny"])
def test_archs_without_a_twin_are_refused(name, twin_folder):
    path = ensure_test_model(name)
    with pytest.raises(TwinError, match="supported: dream, llada"):
        make_twin(path, twin_folder)
    with hk.Model(path) as m, pytest.raises(ParameterError, match="has none") as err:
        hk.generate(m, prompt="hi", max_tokens=16, diffusion=block_params(cache="prefix"))
    assert err.value.param == "cache"


def test_the_choice_is_taken_and_refused_alike_everywhere():
    """diffusion_cache: request field, setting, registry default and CLI flag, from one declaration."""
    from pydantic import ValidationError

    from hoshikage.cli import build_parser
    from hoshikage.server.schemas import ChatCompletionRequest, DiffusionDefaults
    from hoshikage.server.settings import Settings

    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    req = ChatCompletionRequest.model_validate({**chat, "diffusion_cache": "prefix", "diffusion_cache_refresh": 4})
    assert req.diffusion_overrides() == {"cache": "prefix", "cache_refresh": 4}
    assert Settings(diffusion_cache="prefix").diffusion_cache == "prefix" and Settings().diffusion_cache is None
    assert DiffusionDefaults(cache="prefix").cache == "prefix"
    args = build_parser().parse_args(["generate", "-m", "x", "-p", "y", "--diffusion-cache", "prefix"])
    assert args.diffusion_cache == "prefix"
    for bad in (lambda: ChatCompletionRequest.model_validate({**chat, "diffusion_cache": "suffix"}),
                lambda: Settings(diffusion_cache="suffix"), lambda: DiffusionDefaults(cache="suffix")):
        with pytest.raises(ValidationError, match="prefix"):
            bad()


def test_the_memory_estimate_counts_the_twin_context():
    from hoshikage.server.memory import estimate_diffusion

    base = dict(canvas=300, n_ubatch=512, n_prompt=200, n_vocab=320, n_embd=64, n_head=4, n_ff=128,
                block_length=32, cfg=False)
    off, on = estimate_diffusion(**base), estimate_diffusion(**base, kv_cache=(2, 4, 16))
    kv = 2 * 2 * 512 * 4 * 16 * 2  # K and V, 2 layers, 300 cells rounded up to 512, 4 heads of 16, F16
    assert off.cache_bytes == 0 and on.cache_bytes > kv
    assert on.total_bytes - off.total_bytes == on.cache_bytes and "prefix cache" in on.describe()


def test_the_twin_is_loaded_once_and_closed_with_its_model():
    with hk.Model(ensure_test_model("llada-tiny")) as m:
        twin = twin_model(m)
        with PrefixCache(m, canvas_length=CANVAS, blocks=((16, CANVAS),), shift=False, n_threads=2) as cache:
            assert cache.twin is twin
        assert twin_model(m) is twin and not twin.closed
    assert twin.closed  # model.close() (the server's idle unload) closed it
