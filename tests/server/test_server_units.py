"""The server's parts without a live server: settings, request schemas, the registry (atomic,
locked, racing writers), the memory estimate, the GGUF header reader, and access rules."""
from __future__ import annotations

import json
import re
import multiprocessing
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from hoshikage.gguf_file import read_architecture
from hoshikage.server.memory import bucket, estimate_diffusion
from hoshikage.server.registry import ModelEntry, Registry
from hoshikage.server.schemas import ChatCompletionRequest
from hoshikage.server.settings import Settings, load_settings

CHAT = [{"role": "user", "content": "hi"}]


# -- settings ------------------------------------------------------------------------------------

def test_settings_defaults_follow_the_requirements(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("DIFFUSION_STEPS", "TEMPERATURE", "PORT", "HOST", "API_KEY", "HOSHIKAGE_HOME", "RAMDISK_PATH"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert (s.diffusion_steps, s.diffusion_algorithm, s.diffusion_schedule, s.diffusion_cfg_scale) == (50, 4, 0, 0.0)
    assert (s.temperature, s.top_p, s.max_tokens) == (0.2, 0.8, 1024)
    assert (s.idle_timeout, s.great_timeout, str(s.ramdisk_path)) == (300, 3600, "/dev/shm")
    assert (s.host, s.port, s.api_key) == ("127.0.0.1", 3030, None)
    assert s.diffusion_memory_budget_mb > 0


def test_settings_from_env_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOSHIKAGE_HOME", raising=False)
    (tmp_path / ".env").write_text("DIFFUSION_STEPS=12\nTOP_P=0.5\nDEFAULT_STOP=a,b\nRAMDISK_PATH=\n")
    monkeypatch.setenv("TOP_P", "0.9")  # the environment wins over .env
    s = load_settings()
    assert s.diffusion_steps == 12 and s.top_p == 0.9
    assert s.default_stop == ["a", "b"] and s.ramdisk_path is None


def test_bad_setting_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFUSION_ALGORITHM", "7")
    with pytest.raises(ValidationError, match="diffusion_algorithm"):
        load_settings()


def test_settings_never_load_the_native_library():
    code = ("import sys; from hoshikage.server.settings import load_settings; load_settings(); "
            "import hoshikage._ffi as f; assert 'lib' not in f._state, 'libllama was loaded'")
    import subprocess
    import sys

    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# -- request schemas --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(4, 4), ("4", 4), ("confidence_based", 4), ("ENTROPY_BASED", 1),
                                             ("random", 3)])
def test_algorithm_by_number_or_name(value, expected):
    req = ChatCompletionRequest(model="m", messages=CHAT, diffusion_algorithm=value)
    assert req.diffusion_algorithm == expected


@pytest.mark.parametrize("value, expected", [(0, 0), ("block", 1), ("TIMESTEP_BASED", 0), ("1", 1)])
def test_schedule_by_number_or_name(value, expected):
    assert ChatCompletionRequest(model="m", messages=CHAT, diffusion_schedule=value).diffusion_schedule == expected


def test_unknown_diffusion_field_is_refused_other_unknown_fields_ignored():
    with pytest.raises(ValidationError, match="diffusion_step"):
        ChatCompletionRequest(model="m", messages=CHAT, diffusion_step=3)
    req = ChatCompletionRequest(model="m", messages=CHAT, logit_bias={"1": 2}, tools=[])
    assert req.model == "m"


def test_content_parts_and_developer_role():
    req = ChatCompletionRequest(model="m", messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert req.as_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


# -- registry ------------------------------------------------------------------------------------

def test_registry_round_trip_legacy_entries_and_discovery(tmp_path):
    reg = Registry(tmp_path)
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"GGUF")
    reg.add(ModelEntry(name="a", path=gguf, stop=("x",), diffusion={"steps": 9}, max_tokens=7))
    raw = json.loads((tmp_path / "model_map.json").read_text())
    assert raw["a"] == {"path": str(gguf), "stop": ["x"], "diffusion": {"steps": 9}, "max_tokens": 7}
    # Hoshikage 1.0 wrote a folder and a file name.
    raw["old"] = {"path": str(tmp_path), "model": "a.gguf"}
    (tmp_path / "model_map.json").write_text(json.dumps(raw))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "found.gguf").write_bytes(b"GGUF")
    entries = reg.entries()
    assert entries["old"].path == gguf
    assert entries["found"].source == "models_dir"
    assert reg.remove("a") and not reg.remove("a")
    assert "a" not in reg.entries()


def test_broken_registry_keeps_the_last_good_entries(tmp_path):
    reg = Registry(tmp_path)
    reg.add(ModelEntry(name="a", path=tmp_path / "a.gguf"))
    assert "a" in reg.entries()
    (tmp_path / "model_map.json").write_text("{broken")
    assert "a" in reg.entries()


def _add_many(home: str, prefix: str, n: int) -> None:
    reg = Registry(home)
    for i in range(n):
        reg.add(ModelEntry(name=f"{prefix}{i}", path=Path(home) / f"{prefix}{i}.gguf"))


def test_racing_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), p, 25)) for p in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = set(json.loads((tmp_path / "model_map.json").read_text()))
    assert names == {f"{p}{i}" for p in "abcd" for i in range(25)}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    reg.add(ModelEntry(name="a", path=tmp_path / "a.gguf"))
    before = (tmp_path / "model_map.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        reg.add(ModelEntry(name="b", path=tmp_path / "b.gguf"))
    assert (tmp_path / "model_map.json").read_text() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# -- memory ----------------------------------------------------------------------------------------

def test_buckets():
    assert [bucket(n, 4096) for n in (1, 64, 65, 300, 4096, 5000)] == [64, 64, 128, 512, 4096, 4096]


def test_estimate_counts_the_full_canvas_logits_once_and_cfg_rows_only():
    common = dict(canvas=512, n_ubatch=512, n_prompt=12, n_vocab=126464, n_embd=4096, n_head=32, n_ff=12288,
                  block_length=32)
    plain, cfg = estimate_diffusion(**common, cfg=False), estimate_diffusion(**common, cfg=True)
    assert plain.logits_bytes == 512 * 126464 * 4  # 259 MB: LLaDA at canvas 512
    assert cfg.cfg_bytes == 2 * 32 * 126464 * 4  # the block's rows (cond + uncond), not a second canvas
    assert cfg.total_bytes - plain.total_bytes == cfg.cfg_bytes


# -- GGUF header -------------------------------------------------------------------------------------

def test_architecture_from_the_header(smollm2_path, tmp_path):
    assert read_architecture(smollm2_path) == "llama"
    (tmp_path / "x.gguf").write_bytes(b"nope")
    assert read_architecture(tmp_path / "x.gguf") is None


# -- access rules (in-process, no model needed) ------------------------------------------------------

def _client(tmp_path, **settings):
    from fastapi.testclient import TestClient

    from hoshikage.server import create_app

    app = create_app(Settings(hoshikage_home=tmp_path, ramdisk_path=None, **settings))
    return TestClient(app, base_url="http://localhost")  # its client address is "testclient": not loopback


def test_admin_refuses_non_loopback_clients_without_api_key(tmp_path):
    client = _client(tmp_path)
    r = client.post("/admin/reload")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/models").status_code == 200


def test_api_key_guards_everything_but_status(tmp_path):
    client = _client(tmp_path, api_key="s3cret")
    assert client.get("/v1/status").status_code == 200
    for method, path in (("get", "/v1/models"), ("get", "/v1/api/version"), ("post", "/admin/reload"),
                         ("get", "/openapi.json"), ("post", "/v1/chat/completions")):
        r = getattr(client, method)(path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key"
    ok = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/models", headers=ok).status_code == 200
    assert client.post("/admin/reload", headers=ok).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_env_example_documents_every_setting():
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"# {name.upper()}=" not in text]
    assert not missing, f".env.example lacks {missing}"


def test_log_file_rotates_daily_to_dated_names(tmp_path):
    import logging
    from logging.handlers import TimedRotatingFileHandler

    from hoshikage.server.logs import setup_logging

    path = tmp_path / "logs" / "hoshikage.log"
    handler = setup_logging(path, "INFO")
    try:
        assert isinstance(handler, TimedRotatingFileHandler) and handler.when == "MIDNIGHT"
        logging.getLogger("hoshikage.server.requests").info("model=x kind=autoregressive")
        handler.doRollover()
        rotated = [p.name for p in path.parent.iterdir() if p.name != path.name]
        assert len(rotated) == 1 and re.fullmatch(r"hoshikage\.log\.\d{4}-\d{2}-\d{2}", rotated[0])
        assert "model=x" in (path.parent / rotated[0]).read_text()
    finally:
        for name in ("hoshikage", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).propagate = True
        handler.close()


def test_default_models_are_registered_once_and_repointed_when_stale(tmp_path, native_build):
    from hoshikage.server.defaults import AR_NAME, DIFFUSION_MODELS, ensure_default_models

    name = "llada-tasks"  # a trained model (hoshikage/trained), not a random-weight test model
    reg = Registry(tmp_path)
    assert sorted(ensure_default_models(reg)) == sorted([AR_NAME, *DIFFUSION_MODELS])
    entries = reg.entries()
    assert not entries[name].test_model and "knows nothing else" in entries[name].description
    assert entries[name].path.is_file() and entries[AR_NAME].path.is_file()
    assert ensure_default_models(reg) == []  # nothing to do the second time
    # A user's change survives; an entry whose file is gone is repointed.
    reg.add(ModelEntry(name=name, path=tmp_path / "llada-tasks-old.gguf", stop=("user-stop",), description="mine"))
    assert ensure_default_models(reg) == [name]
    entry = reg.entries()[name]
    assert entry.path == entries[name].path and entry.stop == ("user-stop",)
