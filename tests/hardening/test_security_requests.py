"""Security, round two: what a request carries (docs/reliability.md section 8, rows 1, 4, 6, 12 and
the diffusion work ceiling of 13).

Each test sends the attack to a live ``hoshikage serve`` on 127.0.0.1 and checks three things: a
clear 4xx in the error shape naming the field, the server still answering (a normal request
succeeds), and the registry (``model_map.json`` in the server's HOSHIKAGE_HOME) unchanged with
every model listed.
"""
from __future__ import annotations

import json
import shutil

import gguf_craft
import httpx
import pytest
from conftest import FAST_ENV, LiveServer, write_registry

MODELS = {"smollm2", "llada", "dream"}
CHAT, COMP, ADMIN = "/v1/chat/completions", "/v1/completions", "/admin/models"
# A small diffusion step ceiling and timeout cap, so that the test requests stay short.
ENV = {**FAST_ENV, "MAX_DIFFUSION_STEPS": "64", "DIFFUSION_TIMEOUT_CAP": "22"}


@pytest.fixture(scope="module")
def server(make_server):
    return make_server(ENV)


def registry_bytes(server: LiveServer) -> bytes:
    return (server.home / "model_map.json").read_bytes()


def send(server: LiveServer, path: str, body) -> httpx.Response:
    if isinstance(body, str):  # raw JSON text: how "\ud800" escapes reach the server
        return httpx.post(server.url + path, content=body, headers={"content-type": "application/json"},
                          timeout=120)
    return httpx.post(server.url + path, json=body, timeout=120)


def assert_refused(r: httpx.Response, status: int, param: str, words: str = "") -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] is not None and err["param"].startswith(param), err
    assert words in err["message"], err
    assert "Traceback" not in err["message"]
    return err


def assert_unharmed(server: LiveServer, registry_before: bytes, models: set[str] = MODELS) -> None:
    """Still running, a normal request answered, the registry file unchanged, every model listed."""
    assert server.proc.poll() is None, server.output()
    r = send(server, CHAT, {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert registry_bytes(server) == registry_before
    listed = httpx.get(server.url + "/v1/models", timeout=10).json()["data"]
    assert models <= {m["id"] for m in listed}


def peak_rss_mb(server: LiveServer) -> float:
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# -- 1. repeat_last_n: llama.cpp allocates its look-back up front ----------------------------------

def test_repeat_last_n_past_the_context_is_refused_before_any_allocation(server):
    before = registry_bytes(server)
    send(server, COMP, {"model": "smollm2", "prompt": "Hello", "max_tokens": 2})  # model loaded
    peak = peak_rss_mb(server)
    attack = {"model": "smollm2", "prompt": "Hello", "max_tokens": 4, "repeat_penalty": 1.1,
              "repeat_last_n": 2147483647}
    assert_refused(send(server, COMP, attack), 400, "repeat_last_n", "at most 256")
    assert_refused(send(server, CHAT, {**attack, "prompt": None, "messages": [{"role": "user", "content": "x"}],
                                       "stream": True}), 400, "repeat_last_n")
    # Before the fix this request answered 200 and the peak grew by 8,192 MiB (a 2**31-entry int32
    # ring buffer); generous slack for allocator noise.
    assert peak_rss_mb(server) - peak < 256
    assert_unharmed(server, before)


@pytest.mark.parametrize("value", [-1, 256])
def test_repeat_last_n_up_to_the_context_runs(server, value):
    r = send(server, COMP, {"model": "smollm2", "prompt": "Hello", "max_tokens": 4, "temperature": 0,
                            "repeat_penalty": 1.3, "repeat_last_n": value})
    assert r.status_code == 200, r.text
    assert r.json()["hoshikage"]["params"]["repeat_last_n"] == value


def test_top_k_past_the_vocabulary_acts_as_the_whole_vocabulary(server):
    before = registry_bytes(server)
    r = send(server, COMP, {"model": "smollm2", "prompt": "Hello", "max_tokens": 3, "top_k": 2**31 - 1})
    assert r.status_code == 200, r.text
    assert_unharmed(server, before)


def test_stop_strings_are_bounded(server):
    before = registry_bytes(server)
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert_refused(send(server, CHAT, {**chat, "stop": ["x" * 257]}), 422, "stop", "at most 256")
    assert_refused(send(server, CHAT, {**chat, "stop": ["x"] * 17}), 422, "stop", "at most 16")
    assert send(server, CHAT, {**chat, "stop": ["x" * 256] * 16}).status_code == 200
    assert_unharmed(server, before)


# -- 4. lone surrogates: refused where they enter, naming the field --------------------------------

HI = '[{"role": "user", "content": "Hi"}]'
SURROGATES = [
    ("stop list", CHAT, '{"model": "smollm2", "messages": %s, "stop": ["\\ud800"]}' % HI, "stop"),
    ("stop string", CHAT, '{"model": "smollm2", "messages": %s, "stop": "a\\udfff"}' % HI, "stop"),
    ("stop, streamed", CHAT, '{"model": "smollm2", "messages": %s, "stop": ["\\ud800"], "stream": true}' % HI,
     "stop"),
    ("content", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "\\ud800"}]}',
     "messages.0.content"),
    ("content part", CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": '
                           '[{"type": "text", "text": "ok \\udc80"}]}]}', "messages.0.content"),
    ("prompt", COMP, '{"model": "smollm2", "prompt": "x\\ud800y"}', "prompt"),
    ("prompt list", COMP, '{"model": "smollm2", "prompt": ["\\ud800"]}', "prompt"),
    ("model", CHAT, '{"model": "smollm2\\ud800", "messages": %s}' % HI, "model"),
    ("user", CHAT, '{"model": "smollm2", "messages": %s, "user": "\\ud800"}' % HI, "user"),
    ("admin description", ADMIN, '{"name": "surrogate", "path": "/x.gguf", "description": "\\ud800"}',
     "description"),
    ("admin stop", ADMIN, '{"name": "surrogate", "path": "/x.gguf", "stop": ["\\udbff"]}', "stop"),
    ("admin name", ADMIN, '{"name": "a\\ud800", "path": "/x.gguf"}', "name"),
    ("admin path", ADMIN, '{"name": "surrogate", "path": "/tmp/\\ud800.gguf"}', "path"),
]


@pytest.mark.parametrize("case,path,body,param", SURROGATES, ids=[c[0] for c in SURROGATES])
def test_lone_surrogates_are_refused_naming_the_field(server, case, path, body, param):
    before = registry_bytes(server)
    err = assert_refused(send(server, path, body), 422, param)
    assert err["code"] == "validation_error"
    assert_unharmed(server, before)


def test_a_surrogate_pair_is_fine(server):
    r = send(server, CHAT, '{"model": "smollm2", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}], '
                           '"stop": ["\\ud83d\\ude00"], "max_tokens": 2}')
    assert r.status_code == 200, r.text
    assert r.json()["hoshikage"]["params"]["stop"][-1] == "\U0001F600"


# -- 6. model names: printable text only ------------------------------------------------------------

BAD_NAMES = ["x\n2026 INFO forged", "\x1b[2J\x1b[31mred", "right\u202etfel", "tab\there", " padded", "a/b",
             "n" * 129, "nul\x00"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[ascii(n)[:20] for n in BAD_NAMES])
def test_admin_refuses_a_model_name_with_control_characters(server, good_models, name):
    before = registry_bytes(server)
    r = send(server, ADMIN, {"name": name, "path": str(good_models["dream"])})
    assert_refused(r, 422, "name")
    assert_unharmed(server, before)
    assert not [line for line in server.log_lines() if line.startswith("2026 INFO forged")]


def test_hoshikage_add_refuses_a_bad_name(server, good_models):
    before = registry_bytes(server)
    done = server.cli("add", str(good_models["dream"]), "x\n2026 INFO forged")
    assert done.returncode == 2, done
    assert "printable" in done.stderr and "\n2026 INFO forged" not in done.stderr
    assert_unharmed(server, before)


def test_bad_entries_in_the_registry_file_are_skipped_not_fatal(tmp_path, good_models):
    home = tmp_path / "home"
    write_registry(home, good_models)
    raw = json.loads((home / "model_map.json").read_text())
    raw["x\n2026 INFO forged"] = {"path": str(good_models["dream"]), "stop": []}
    raw["\x1b[31mred"] = {"path": str(good_models["dream"]), "stop": []}
    raw["surrogate-description"] = {"path": str(good_models["dream"]), "description": "\ud800"}
    raw["no-path"] = {"stop": []}
    (home / "model_map.json").write_text(json.dumps(raw, ensure_ascii=True))  # "\ud800" as its JSON escape
    (home / "models").mkdir()
    shutil.copyfile(good_models["dream"], home / "models" / "bad\x1bname.gguf")
    server = LiveServer(home, ENV).start()
    try:
        before = registry_bytes(server)
        listed = {m["id"] for m in httpx.get(server.url + "/v1/models", timeout=10).json()["data"]}
        assert listed == MODELS, listed
        warnings = [line for line in server.log_lines() if "skipped" in line or "not served" in line]
        assert len(warnings) >= 5, server.output()
        assert not [line for line in server.log_lines() if line.startswith("2026 INFO forged") or "\x1b" in line]
        assert_unharmed(server, before)
        # A write keeps the entries it skipped: nothing in the file is lost.
        assert send(server, ADMIN, {"name": "dream-2", "path": str(good_models["dream"])}).status_code == 200
        after = json.loads((home / "model_map.json").read_text(encoding="utf-8"))
        assert set(after) == set(raw) | {"dream-2"}
        assert after["surrogate-description"]["description"] == "\ud800"
        shown = server.cli("list")
        assert shown.returncode == 0 and "\x1b" not in shown.stdout and "dream-2" in shown.stdout
        assert "forged" not in shown.stdout
    finally:
        server.stop()


# -- 12. prompts llama.cpp's regex pre-tokenizers would crash on ----------------------------------

def falcon_variant(good_models, tmp_path) -> str:
    """SmolLM2 with pre-tokenizer "falcon" (same length as "smollm", patched in place), whose first
    split is a std::regex ``[\\p{P}...]+``: a 30,000-character run of "!" kills the process."""
    layout = gguf_craft.layout(good_models["smollm2"])
    kv = layout.kv["tokenizer.ggml.pre"]
    assert kv.value == "smollm"
    out = gguf_craft._patch(good_models["smollm2"], tmp_path / "falcon.gguf", [(kv.value_offset + 8, b"falcon")])
    return str(out)


def test_long_runs_of_one_character_class_are_refused(tmp_path, good_models):
    home = tmp_path / "home"
    write_registry(home, good_models)
    raw = json.loads((home / "model_map.json").read_text())
    raw["falcon"] = {"path": falcon_variant(good_models, tmp_path), "stop": []}
    (home / "model_map.json").write_text(json.dumps(raw))
    # N_CTX 512: up to 32,768 characters get past the length bound, so the run bound is what refuses.
    server = LiveServer(home, {**ENV, "N_CTX": "512"}).start()
    try:
        before = registry_bytes(server)
        for model in ("falcon", "smollm2"):
            for run in ("!" * 30_000, "a" * 30_000, "7" * 30_000, " \n\t" * 10_000, "a\u0301" * 15_000):
                r = send(server, COMP, {"model": model, "prompt": "Say: " + run, "max_tokens": 2})
                assert_refused(r, 400, "prompt", "in a row")
                r = send(server, CHAT, {"model": model, "max_tokens": 2,
                                        "messages": [{"role": "user", "content": run}]})
                assert_refused(r, 400, "messages", "in a row")
        assert_refused(send(server, COMP, {"model": "falcon", "prompt": "hello " * 6000}), 400, "prompt",
                       "more than a context of 512 tokens can hold")
        ok = send(server, COMP, {"model": "falcon", "prompt": "Wow" + "!" * 1500, "max_tokens": 2})
        assert ok.status_code == 200, ok.text  # a run within the bound is tokenized as before
        assert server.proc.poll() is None
        assert_unharmed(server, before, MODELS | {"falcon"})
    finally:
        server.stop()


# -- 13. a ceiling on diffusion work ----------------------------------------------------------------

def test_diffusion_steps_above_the_ceiling_are_refused(server):
    before = registry_bytes(server)
    dream = {"model": "dream", "messages": [{"role": "user", "content": "Hi"}]}
    assert_refused(send(server, CHAT, {**dream, "max_tokens": 4096, "diffusion_steps": 4096}), 400,
                   "diffusion_steps")
    assert_refused(send(server, CHAT, {**dream, "max_tokens": 64, "diffusion_steps": 128}), 400,
                   "diffusion_steps", "MAX_DIFFUSION_STEPS=64")
    assert_refused(send(server, CHAT, {**dream, "max_tokens": 64, "diffusion_steps": 65, "stream": True}), 400,
                   "diffusion_steps", "MAX_DIFFUSION_STEPS=64")
    assert_unharmed(server, before)


def test_the_scaled_diffusion_timeout_is_capped(server):
    dream = {"model": "dream", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    r = send(server, CHAT, {**dream, "diffusion_steps": 64})  # 20 s x 64 / 50 = 25.6 s, cut to 22 s
    assert r.status_code == 200, r.text
    assert r.json()["hoshikage"]["timeout_s"] == 22
    r = send(server, CHAT, {**dream, "diffusion_steps": 4})  # never below REQUEST_TIMEOUT
    assert r.status_code == 200 and r.json()["hoshikage"]["timeout_s"] == 20
