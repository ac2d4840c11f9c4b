"""llama.cpp's RPC backend, on loopback: two ``rpc-server`` processes (CPU backend) on 127.0.0.1.

A model split across the local CPU and both servers must produce exactly what the local run
produces: SmolLM2 greedy, and a diffusion test model in reference mode (llama.cpp's algorithm).
Faults: an unreachable endpoint is refused before llama.cpp sees it (it would abort the
process), and a server killed between two decodes is an error naming it, not an abort.
"""
from __future__ import annotations

import json

import pytest
from test_cli import hoshikage as run_cli

import hoshikage as hk
from hoshikage import _ffi, devices, rpc_endpoints
from hoshikage.errors import ModelLoadError, ParameterError
from hoshikage.testing.diffusion_models import ensure_test_model
from hoshikage.testing.rpc_servers import RPCServer, free_port

PROMPT = "The capital of France is"


def test_binding_has_the_backend_and_rpc_functions(native_build):
    lib = _ffi.lib()
    for name in ("ggml_backend_dev_count", "ggml_backend_dev_memory", "ggml_backend_rpc_add_server"):
        assert hasattr(lib, name)
    assert lib.ggml_backend_reg_by_name(b"RPC") != _ffi.NULL, "make build builds the RPC backend (--rpc)"
    assert "ggml_backend_dev_props" in native_build.manifest["layouts"]


def test_local_devices_report_memory():
    found = [devices.describe(d) for d in devices.local_devices()]
    cpu = [d for d in found if d.kind == "cpu"]
    assert cpu and cpu[0].total_bytes > 0 and 0 < cpu[0].free_bytes <= cpu[0].total_bytes


@pytest.mark.parametrize("bad", ["127.0.0.1", ":50052", "host:0", "host:70000", "host:port", "a b:1"])
def test_bad_endpoints_are_refused_naming_rpc(bad):
    with pytest.raises(ParameterError) as err:
        rpc_endpoints.parse_endpoints([bad])
    assert err.value.param == "rpc" and repr(bad) in str(err.value)


def test_endpoints_and_split_parse_like_llama_cpp_flags():
    assert rpc_endpoints.parse_endpoints("127.0.0.1:50052, localhost:1") == ["127.0.0.1:50052", "localhost:1"]
    assert rpc_endpoints.parse_tensor_split("3,1") == [3.0, 1.0]
    for bad in ("0,0", "-1,2", "x", "inf"):
        with pytest.raises(ParameterError, match="tensor_split"):
            rpc_endpoints.parse_tensor_split(bad)
    with pytest.raises(ParameterError, match="twice"):
        rpc_endpoints.parse_endpoints("127.0.0.1:1,127.0.0.1:1")


def _greedy(model: hk.Model) -> hk.Completion:
    return hk.generate(model, PROMPT, max_tokens=16, temperature=0.0, seed=1, n_threads=1)


def test_smollm2_split_over_two_servers_is_identical_to_local(smollm2, smollm2_path, rpc_servers):
    local = _greedy(smollm2)
    endpoints = [s.endpoint for s in rpc_servers]
    # 30 layers: the first 11 stay on this CPU, the rest and the output layer go to the servers.
    with hk.Model(smollm2_path, rpc=endpoints, tensor_split=[1, 1], n_gpu_layers=20) as split:
        assert split.load_params["rpc"] == endpoints
        remote = _greedy(split)
        placed = devices.model_devices(split)  # this CPU, then each server's device, with the weights on each
    assert [d["kind"] for d in placed] == ["cpu", "rpc", "rpc"]
    assert [d["endpoint"] for d in placed[1:]] == endpoints
    assert all(d["buffers_mb"]["model"] > 0 and d["total_mb"] > 0 for d in placed)
    assert remote.tokens == local.tokens and remote.text == local.text


def test_diffusion_split_is_token_identical_in_reference_mode(rpc_servers):
    path = ensure_test_model("llada-tiny")
    params = {"steps": 6, "block_length": 8, "schedule": hk.Schedule.BLOCK_BASED}

    def run(model: hk.Model) -> list[int]:
        return hk.generate(model, prompt_tokens=[5, 6, 7, 8], max_tokens=24, temperature=0.0, seed=3,
                           diffusion=params, n_threads=1).tokens

    with hk.Model(path) as model:
        local = run(model)
    # 2 layers: layer 0 here, layer 1 on the first server, the output layer on the second.
    with hk.Model(path, rpc=[s.endpoint for s in rpc_servers], tensor_split=[1, 1], n_gpu_layers=2) as model:
        remote = run(model)
    assert remote == local and len(local) == 24


def test_unreachable_endpoint_is_refused_before_llama_cpp_connects(smollm2_path):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ModelLoadError) as err:
        hk.Model(smollm2_path, rpc=[dead])
    assert dead in str(err.value) and "cannot be reached" in str(err.value)


def test_server_killed_between_decodes_is_an_error_naming_it(tool, tmp_path):
    """Its own server: after the loss this process must never talk to that endpoint again (the
    lost connection stays with llama.cpp, which aborts on any use of it)."""
    server = RPCServer(tool("ggml-rpc-server"), log_dir=tmp_path).start()
    path = ensure_test_model("llada-tiny")
    model = hk.Model(path, rpc=[server.endpoint], n_gpu_layers=2)

    def kill_on_second_step(step: int, total: int, canvas) -> bool:
        if step == 1:
            server.stop()
        return True

    with pytest.raises(rpc_endpoints.RPCConnectionLost) as err:
        hk.generate(model, prompt_tokens=[5, 6, 7], max_tokens=16, seed=1, n_threads=1,
                    diffusion={"steps": 4, "block_length": 16, "schedule": hk.Schedule.BLOCK_BASED},
                    on_step=kill_on_second_step)
    assert server.endpoint in str(err.value)
    model.close()  # leaves its remote buffers (freeing them would abort), frees nothing it cannot
    assert model.closed


def test_cli_rpc_and_tensor_split_flags(smollm2_path, rpc_servers):
    common = ["generate", "-m", str(smollm2_path), "-p", PROMPT, "-n", "12", "--temp", "0", "-t", "1",
              "--no-chat-template", "--json"]
    local = json.loads(run_cli(*common).stdout)
    endpoints = ",".join(s.endpoint for s in rpc_servers)
    split = json.loads(run_cli(*common, "--rpc", endpoints, "--tensor-split", "1,1", "-ngl", "20").stdout)
    assert split["tokens"] == local["tokens"] and len(local["tokens"]) == 12


def test_cli_unreachable_rpc_server_is_a_clear_error(smollm2_path):
    dead = f"127.0.0.1:{free_port()}"
    out = run_cli("generate", "-m", str(smollm2_path), "-p", "x", "--rpc", dead, check=False)
    assert out.returncode == 1 and dead in out.stderr and "Traceback" not in out.stderr
