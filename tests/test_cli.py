"""hoshikage generate: the command line a user types, run as a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_generation_autoregressive import llama_simple_continuation


def hoshikage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hoshikage", *args], capture_output=True, text=True,
                          timeout=300, check=check)


@pytest.mark.parametrize("prompt", ["The weather today", "日本語で書くと"])
def test_greedy_json_text_equals_llama_simple(smollm2, tool, prompt):
    out = hoshikage("generate", "-m", str(smollm2.path), "-p", prompt, "-n", "24", "--temp", "0",
                    "--no-chat-template", "--json")
    result = json.loads(out.stdout)
    assert result["text"] == llama_simple_continuation(tool, smollm2, prompt, 24)
    assert len(result["tokens"]) == result["usage"]["completion_tokens"] == 24
    assert result["finish_reason"] == "length"
    assert result["prompt_tokens"] > 0 and "tokens_per_s" in result["timings"]
    assert result["params"]["temperature"] == 0


def test_plain_output_is_the_answer(smollm2):
    out = hoshikage("generate", "-m", str(smollm2.path), "-p", "What is 2+2?", "-n", "40", "--temp", "0")
    assert "4" in out.stdout and "<|im" not in out.stdout


def test_missing_model_is_a_clear_error(tmp_path):
    out = hoshikage("generate", "-m", str(tmp_path / "nope.gguf"), "-p", "x", check=False)
    assert out.returncode == 1 and "model file not found" in out.stderr and "Traceback" not in out.stderr


def test_bad_parameter_is_a_clear_error(smollm2):
    out = hoshikage("generate", "-m", str(smollm2.path), "-p", "x", "--top-p", "2", check=False)
    assert out.returncode == 2 and "top_p" in out.stderr and "Traceback" not in out.stderr


def test_diffusion_progress_is_the_library_bar():
    """hoshikage generate draws hoshikage.progress's tqdm bar on stderr (--diffusion-visual: with the
    answer so far on its line); --json draws none, and stdout holds only the result."""
    from hoshikage.testing import ensure_test_model

    args = ("generate", "-m", str(ensure_test_model("llada-tiny")), "-p", "Hi", "-ub", "48",
            "--diffusion-steps", "4", "--diffusion-eps", "0.001", "--temp", "0", "-t", "1")
    shown = hoshikage(*args, "--diffusion-visual")
    assert "diffusion step: 100%" in shown.stderr and "4/4" in shown.stderr and "step/s" in shown.stderr
    assert "diffusion step" not in shown.stdout and shown.stdout.strip()
    quiet = hoshikage(*args, "--json")
    assert "diffusion step" not in quiet.stderr and json.loads(quiet.stdout)["kind"] == "diffusion"
