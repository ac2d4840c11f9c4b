"""RPC settings and registry fields, and where an entry's layers go (no native library, no server)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hoshikage.server.placement import load_options, rpc_servers
from hoshikage.server.registry import ModelEntry, Registry
from hoshikage.server.settings import load_settings


def test_rpc_settings_parse_like_llama_cpp_flags(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RPC_SERVERS", "10.0.0.2:50052, 10.0.0.3:50052")
    monkeypatch.setenv("TENSOR_SPLIT", "3,1")
    monkeypatch.setenv("DEVICE_MEMORY_LIMIT_MB", "512")
    s = load_settings()
    assert s.rpc_servers == ["10.0.0.2:50052", "10.0.0.3:50052"] and s.tensor_split == [3.0, 1.0]
    assert s.device_memory_limit_mb == 512


@pytest.mark.parametrize("var,value", [("RPC_SERVERS", "10.0.0.2"), ("RPC_SERVERS", "a:1,a:1"),
                                       ("TENSOR_SPLIT", "0,0"), ("TENSOR_SPLIT", "x")])
def test_bad_rpc_settings_name_the_variable(monkeypatch, tmp_path, var, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=f"(?i){var}"):
        load_settings()


def test_entry_placement_wins_over_the_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RPC_SERVERS", "10.0.0.2:50052")
    s = load_settings()
    plain = ModelEntry("m", Path("/m.gguf"))
    assert load_options(plain, s) == {"rpc": ["10.0.0.2:50052"], "tensor_split": None, "n_gpu_layers": None}
    own = ModelEntry("m", Path("/m.gguf"), rpc=("h:1", "h:2"), tensor_split=(1.0, 2.0), n_gpu_layers=10)
    assert load_options(own, s) == {"rpc": ["h:1", "h:2"], "tensor_split": [1.0, 2.0], "n_gpu_layers": 10}
    monkeypatch.delenv("RPC_SERVERS")
    local = load_settings()
    assert rpc_servers(plain, local) == [] and load_options(plain, local)["n_gpu_layers"] == 0


def test_registry_reads_and_writes_placement(tmp_path):
    entry = {"path": str(tmp_path / "m.gguf"), "stop": [], "rpc": "h:1,h:2", "tensor_split": [1, 1],
             "n_gpu_layers": 20}
    (tmp_path / "model_map.json").write_text(json.dumps({"m": entry}))
    read = Registry(tmp_path).get("m")
    assert (read.rpc, read.tensor_split, read.n_gpu_layers) == (("h:1", "h:2"), (1.0, 1.0), 20)
    assert read.to_json()["rpc"] == ["h:1", "h:2"] and read.to_json()["n_gpu_layers"] == 20


@pytest.mark.parametrize("field,value", [("rpc", ["nohost"]), ("tensor_split", [-1]), ("n_gpu_layers", "all")])
def test_registry_refuses_bad_placement_naming_the_entry(tmp_path, field, value, caplog):
    entry = {"path": str(tmp_path / "m.gguf"), field: value}
    (tmp_path / "model_map.json").write_text(json.dumps({"m": entry}))
    assert Registry(tmp_path).get("m") is None
    assert "entry skipped" in caplog.text and field in caplog.text
