"""Context: decode, logits views, validation before C, lifetime."""
from __future__ import annotations

import numpy as np
import pytest

from hoshikage import ClosedError, Context


@pytest.fixture()
def ctx(smollm2):
    with Context(smollm2, n_ctx=256, n_batch=64) as c:
        yield c


def test_logits_shape_and_view(ctx, smollm2):
    toks = smollm2.tokenize("The capital of France is")
    assert ctx.decode(toks, logits="all") == len(toks)
    view = ctx.logits_view()
    assert view.shape == (len(toks), smollm2.n_vocab) and view.dtype == np.float32
    assert not view.flags.owndata
    copy = ctx.logits()
    assert copy.flags.owndata and np.array_equal(copy, view)


def test_last_row_equals_the_all_rows_decode(ctx, smollm2):
    toks = smollm2.tokenize("One two three four")
    ctx.decode(toks, logits="all")
    all_last = ctx.logits()[-1]
    ctx.clear_memory()
    ctx.decode(toks, logits="last")
    np.testing.assert_allclose(ctx.logits_view()[0], all_last, rtol=1e-5, atol=1e-5)


def test_input_longer_than_n_batch_is_split(ctx, smollm2):
    toks = smollm2.tokenize("word " * 100, add_special=False)
    assert len(toks) > ctx.n_batch
    assert ctx.decode(toks, logits="last") == 1
    assert ctx.n_past == len(toks)


@pytest.mark.parametrize("tokens, message", [
    ([], "non-empty"),
    ([-1], "out of range"),
    ([10**6], "out of range"),
])
def test_bad_tokens_raise_value_error(ctx, tokens, message):
    with pytest.raises(ValueError, match=message):
        ctx.decode(tokens)


def test_overflowing_the_context_is_a_value_error(ctx):
    with pytest.raises(ValueError, match="exceed the context"):
        ctx.decode([1] * 10, pos=250)


def test_bad_logits_mask(ctx):
    with pytest.raises(ValueError, match="shape"):
        ctx.decode([1, 2, 3], logits=[True, False])


def test_no_logits_requested_then_view_is_an_error(ctx):
    ctx.decode([1, 2], logits="none")
    with pytest.raises(ValueError, match="no logits"):
        ctx.logits_view()


def test_context_keeps_its_model_and_closes_twice(smollm2):
    c = Context(smollm2, n_ctx=64)
    assert c.model is smollm2
    c.close()
    c.close()
    with pytest.raises(ClosedError):
        c.decode([1])


def test_bad_sizes_are_rejected_before_c(smollm2):
    with pytest.raises(ValueError, match="n_ctx"):
        Context(smollm2, n_ctx=-5)
    with pytest.raises(ValueError, match="n_ubatch"):
        Context(smollm2, n_ctx=64, n_batch=32, n_ubatch=64)


_CLOSE_UNDER_A_CONTEXT = """
import sys
import hoshikage as hk
from hoshikage.testing.diffusion_models import ensure_test_model

model = hk.Model(ensure_test_model("llada-tiny"))
ctx = hk.Context(model, n_ctx=32)
ctx.decode([1, 2, 3], logits="last")
model.close()
assert ctx.closed, "model.close() left its context open"
try:
    ctx.decode([1, 2, 3], logits="last")
except hk.ClosedError as exc:
    print("ClosedError:", exc)
    sys.exit(0)
sys.exit("decode after model.close() did not raise ClosedError")
"""


def test_decode_after_model_close_is_a_closed_error_not_a_crash():
    """Model.close() closes its open contexts first. In a subprocess: a regression would free the
    model under the context, and the decode would then touch freed memory (a crash)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CLOSE_UNDER_A_CONTEXT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])
    assert "ClosedError: context is closed (its model was closed)" in out.stdout


def test_a_model_closes_only_its_open_contexts(smollm2_path):
    from hoshikage import Model

    with Model(smollm2_path) as model:
        kept, dropped = Context(model, n_ctx=64), Context(model, n_ctx=64)
        dropped.close()
        del dropped  # a closed, collected context is no longer tracked
        assert len(model._contexts) == 1
        model.close()
        assert kept.closed and model.closed
        with pytest.raises(ClosedError, match="its model was closed"):
            kept.decode([1])
