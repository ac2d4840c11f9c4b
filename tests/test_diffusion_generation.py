"""Diffusion generation end to end: generate(), the CLI against llama-diffusion-cli, validation."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

import hoshikage as hk
from hoshikage.testing.diffusion_models import ensure_test_model, write_diffusion_gguf


@pytest.fixture(scope="module")
def llada():
    with hk.Model(ensure_test_model("llada-tiny")) as model:
        yield model


@pytest.fixture(scope="module")
def dream():
    with hk.Model(ensure_test_model("dream-tiny")) as model:
        yield model


BLOCK = {"steps": 8, "schedule": hk.Schedule.BLOCK_BASED, "block_length": 16}
MESSAGES = [{"role": "user", "content": "Tell me a story."}]


def reference_cli_text(tool, model_path, args: list[str]) -> str:
    """What llama-diffusion-cli prints as its result: the lines after 'total time: ...'. It
    prints the canvas's raw bytes, which on random weights may split a UTF-8 character:
    decoded with replacement, as Hoshikage's canvas_text is."""
    proc = subprocess.run([tool("llama-diffusion-cli"), "-m", str(model_path), *args],
                          capture_output=True, text=True, errors="replace", timeout=300, check=True)
    log = proc.stdout + proc.stderr
    lines = log[log.index("total time:"):].split("\n")[1:]
    lines[0] = re.sub(r"^\d+\.\d+\.\d+\.\d+ I ", "", lines[0])  # the logger's timestamp prefix
    return "\n".join(lines).strip("\n")


def hoshikage_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hoshikage", "generate", *args], capture_output=True, text=True,
                          timeout=300, check=True)


@pytest.fixture(scope="module")
def unseen_models(tmp_path_factory):
    """Models no test has seen before: each arch with a weight seed drawn now."""
    folder = tmp_path_factory.mktemp("unseen")
    seed = random.randrange(1, 2**31)
    paths = {}
    for arch in ("llada", "dream", "llada-moe", "rnd1"):
        paths[arch] = folder / f"{arch}.gguf"
        write_diffusion_gguf(paths[arch], arch, seed=seed)
    return paths


CLI_CASES = [
    ("llada", ["--diffusion-steps", "8", "--diffusion-block-length", "32", "--temp", "0", "--seed", "1"]),
    ("dream", ["--diffusion-steps", "10", "--diffusion-eps", "0.001", "--temp", "0.7", "--top-k", "20",
               "--seed", "7"]),
    ("llada-moe", ["--diffusion-steps", "4", "--diffusion-block-length", "16", "--diffusion-algorithm", "1",
                   "--temp", "0.5", "--top-p", "0.9", "--seed", "3"]),
    ("rnd1", ["--diffusion-steps", "6", "--diffusion-eps", "0.01", "--diffusion-algorithm", "3", "--temp", "0.9",
              "--diffusion-add-gumbel-noise", "1", "--seed", "11"]),
]


@pytest.mark.parametrize("arch, flags", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_prints_what_llama_diffusion_cli_prints(tool, unseen_models, arch, flags):
    common = ["-p", "Write a haiku about stars", "-ub", "64", "-c", "64", "-t", "2", *flags]
    expected = reference_cli_text(tool, unseen_models[arch], common)
    got = hoshikage_cli(["-m", str(unseen_models[arch]), *common]).stdout.strip("\n")
    assert got == expected


def test_cli_json_reports_canvas_and_step_timings(unseen_models):
    out = hoshikage_cli(["-m", str(unseen_models["llada"]), "-p", "Hi", "-ub", "64", "--diffusion-steps", "4",
                         "--diffusion-block-length", "32", "--temp", "0", "--seed", "1", "--json"])
    result = json.loads(out.stdout)
    assert result["kind"] == "diffusion" and result["canvas_text"]
    assert result["timings"]["steps"] == 4
    assert result["timings"]["decode_ms_per_step"] > 0 and result["timings"]["sampling_ms_per_step"] > 0
    assert result["params"]["schedule"] == "BLOCK_BASED" and result["params"]["canvas_length"] == 64
    assert result["forwards"] == 4 and result["params"]["early_stop"] is False  # llama-diffusion-cli's output


def test_cli_early_stop_and_threshold_keep_the_answer_in_fewer_forwards():
    """On a trained model (its answers end early): --diffusion-early-stop prints the same answer
    in fewer forwards; a threshold and the factor rule run fewer still; bad values name the flag's field."""
    from hoshikage.trained import trained_model_path

    base = ["-m", str(trained_model_path("llada-tasks")), "-p", "63 in words", "-ub", "96", "--diffusion-steps",
            "96", "--diffusion-block-length", "32", "--temp", "0", "--seed", "0", "--json"]
    full, early, fast, factor = (json.loads(hoshikage_cli(base + extra).stdout) for extra in (
        [], ["--diffusion-early-stop"], ["--diffusion-early-stop", "--diffusion-threshold", "0.5"],
        ["--diffusion-factor", "1"]))
    assert early["text"] == full["text"] and early["forwards"] < full["forwards"]
    assert early["params"]["early_stop"] is True and full["params"]["early_stop"] is False
    assert fast["forwards"] < early["forwards"] and fast["params"]["threshold"] == 0.5
    assert factor["forwards"] < full["forwards"] and factor["params"]["factor"] == 1.0
    proc = subprocess.run([sys.executable, "-m", "hoshikage", "generate", *base, "--diffusion-threshold", "1.5"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "threshold" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_rejects_both_eps_and_block_length(unseen_models):
    proc = subprocess.run([sys.executable, "-m", "hoshikage", "generate", "-m", str(unseen_models["llada"]), "-p", "x",
                           "--diffusion-eps", "0.1", "--diffusion-block-length", "32"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--diffusion-eps" in proc.stderr and "Traceback" not in proc.stderr


def test_generate_answer_usage_and_params(llada):
    out = hk.generate(llada, messages=MESSAGES, max_tokens=32, temperature=0, seed=1, diffusion=BLOCK)
    assert out.kind == "diffusion"
    assert out.prompt_tokens == len(hk.prepare_prompt(llada, messages=MESSAGES))
    assert out.usage["completion_tokens"] == len(out.tokens) <= 32
    assert out.finish_reason in ("stop", "length")
    assert out.text and llada.mask_token not in out.tokens
    assert out.params["mask_token_id"] == llada.mask_token and out.params["shift_logits"] is False


def test_same_seed_same_answer(dream):
    kw = dict(messages=MESSAGES, max_tokens=24, temperature=0.8, seed=42, diffusion={"steps": 6, "eps": 1e-3})
    assert hk.generate(dream, **kw).tokens == hk.generate(dream, **kw).tokens


def test_stream_is_one_chunk(llada):
    chunks = list(hk.generate(llada, messages=MESSAGES, max_tokens=32, temperature=0, diffusion=BLOCK, stream=True))
    assert len(chunks) == 1 and chunks[0].completion is not None and chunks[0].text == chunks[0].completion.text


def test_progress_callback_and_cancel_within_one_step(llada):
    seen = []

    def on_step(step, total, canvas):
        seen.append(step)
        return step < 2

    out = hk.generate(llada, messages=MESSAGES, max_tokens=32, temperature=0, diffusion=BLOCK, on_step=on_step)
    assert out.finish_reason == "cancelled" and seen == [0, 1, 2] and out.timings.steps == 2


def test_block_rules_adjusted_and_reported(llada):
    n_prompt = len(hk.prepare_prompt(llada, messages=MESSAGES))
    out = hk.generate(llada, messages=MESSAGES, max_tokens=40, temperature=0,
                      diffusion={"steps": 5, "schedule": hk.Schedule.BLOCK_BASED, "block_length": 16})
    canvas = out.params["canvas_length"]
    assert canvas % 16 == 0 and canvas >= n_prompt + 40
    assert out.params["steps"] % (canvas // 16) == 0
    assert out.notes and any("steps" in n for n in out.notes)


@pytest.mark.parametrize("diffusion, field", [
    ({"steps": 5, "schedule": hk.Schedule.BLOCK_BASED, "block_length": 16}, "block_length|steps|canvas"),
    ({"steps": 0}, "steps"),
    ({"steps": 8, "eps": 1.5}, "eps"),
    ({"steps": 8, "schedule": hk.Schedule.BLOCK_BASED, "block_length": 0}, "block_length"),
    ({"steps": 8, "cfg_scale": float("inf")}, "cfg_scale"),
    ({"steps": 8, "alg_temp": -1.0}, "alg_temp"),
    ({"wobble": 1}, "wobble"),
])
def test_bad_diffusion_parameters_raise_before_c(llada, diffusion, field):
    with pytest.raises(ValueError, match=field):
        hk.generate(llada, messages=MESSAGES, max_tokens=40, diffusion=diffusion, adjust=False)


def test_canvas_longer_than_context(llada):
    with pytest.raises(ValueError, match="max_tokens"):
        hk.generate(llada, messages=MESSAGES, max_tokens=500, n_ctx=128, adjust=False, diffusion=BLOCK)
    out = hk.generate(llada, messages=MESSAGES, max_tokens=500, n_ctx=128, adjust=True, diffusion=BLOCK)
    assert out.params["canvas_length"] <= 128 and out.notes


def test_reused_context_gets_causal_attention_back(llada):
    with hk.Context(llada, n_ctx=96, n_batch=96, n_ubatch=96) as ctx:
        hk.generate(llada, messages=MESSAGES, max_tokens=32, temperature=0, diffusion=BLOCK, context=ctx)
        assert ctx.causal_attn


def test_corrected_mode_runs_and_differs_from_reference(dream):
    base = dict(messages=MESSAGES, max_tokens=32, temperature=0.8, seed=3)
    diff = {"steps": 8, "eps": 1e-3, "algorithm": hk.Algorithm.ENTROPY_BASED}
    ref = hk.generate(dream, **base, diffusion=diff)
    fixed = hk.generate(dream, **base, diffusion={**diff, "corrected": True})
    assert fixed.params["corrected"] is True
    assert ref.tokens != fixed.tokens  # entropy ranks the other way round


def test_progress_bar_counts_every_step(llada):
    import io

    stream = io.StringIO()
    bar = hk.progress_bar(file=stream, model=llada, show_text=True, mininterval=0)
    hk.generate(llada, messages=MESSAGES, max_tokens=32, temperature=0, diffusion=BLOCK, on_step=bar)
    shown = stream.getvalue()
    assert "8/8" in shown
    assert bar._bar is None  # generate() finished and closed it
