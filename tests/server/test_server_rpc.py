"""Models on RPC servers in a live server: two loopback rpc-server processes (CPU backend).

A model whose registry entry names RPC servers runs in the server's child process
(hoshikage/server/isolated.py): its answers equal the local model's, /v1/status lists every
device with its memory and the model's buffers on it, an unreachable endpoint is
model_load_failed naming it, an rpc-server killed during a generation fails that request only
(the server goes on, and loads the model again once the endpoint is back), and a canvas too big
for a device's (capped) memory is refused naming the device.
"""
from __future__ import annotations

import json
import socket
import threading

import pytest

from hoshikage.testing.rpc_servers import RPCServer, free_port

CHAT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def servers(tool, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("rpc-servers")
    started = [RPCServer(tool("ggml-rpc-server"), log_dir=log_dir).start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def add_entries(home, model_paths, servers) -> None:
    """smollm2-rpc and llada-rpc split over the first two servers (the CPU keeps some layers),
    dream-rpc on the third alone, and smollm2-nowhere on an address nothing listens on."""
    registry = json.loads((home / "model_map.json").read_text())
    pair = [s.endpoint for s in servers[:2]]
    registry["smollm2-rpc"] = {"path": str(model_paths["smollm2"]), "rpc": pair, "tensor_split": [1, 1],
                               "n_gpu_layers": 20}
    registry["llada-rpc"] = {**registry["llada"], "rpc": ",".join(pair), "n_gpu_layers": 2}
    registry["dream-rpc"] = {**registry["dream"], "rpc": [servers[2].endpoint]}
    registry["smollm2-nowhere"] = {"path": str(model_paths["smollm2"]), "rpc": [f"127.0.0.1:{free_port()}"]}
    (home / "model_map.json").write_text(json.dumps(registry))


@pytest.fixture(scope="module")
def server(make_server, model_paths, servers):
    live = make_server(start=False)
    add_entries(live.home, model_paths, servers)
    return live.start()


def chat(server, model: str, **extra):
    return server.post("/v1/chat/completions", {"model": model, "messages": CHAT, "max_tokens": 8,
                                                "temperature": 0, "seed": 1, **extra})


def test_split_model_answers_like_the_local_one_and_status_lists_devices(server, servers):
    local = chat(server, "smollm2")
    assert local.status_code == 200, local.text
    here = server.status()["devices"]  # the model in the server's own process: this machine's devices
    assert here[0]["kind"] == "cpu" and here[0]["buffers_mb"]["model"] > 0 and "rpc" not in {d["kind"] for d in here}
    remote = chat(server, "smollm2-rpc")
    assert remote.status_code == 200, remote.text
    assert remote.json()["choices"][0]["message"] == local.json()["choices"][0]["message"]
    status = server.status()
    assert status["loaded_model"] == "smollm2-rpc" and status["model_process"]["pid"] != server.proc.pid
    by_kind = {}
    for device in status["devices"]:
        by_kind.setdefault(device["kind"], []).append(device)
        assert device["total_mb"] > 0 and 0 <= device["free_mb"] <= device["total_mb"]
    assert [d["endpoint"] for d in by_kind["rpc"]] == [s.endpoint for s in servers[:2]]
    assert all(d["buffers_mb"]["model"] > 0 for d in by_kind["rpc"] + by_kind["cpu"])


def test_diffusion_split_matches_local(server):
    local = chat(server, "llada", max_tokens=24)
    remote = chat(server, "llada-rpc", max_tokens=24)
    assert local.status_code == remote.status_code == 200, remote.text
    assert remote.json()["choices"][0]["message"] == local.json()["choices"][0]["message"]


def test_unreachable_endpoint_is_model_load_failed_naming_it(server):
    r = chat(server, "smollm2-nowhere")
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    registry = json.loads((server.home / "model_map.json").read_text())
    assert error["code"] == "model_load_failed" and registry["smollm2-nowhere"]["rpc"][0] in error["message"]
    assert chat(server, "smollm2").status_code == 200  # the server goes on


def test_rpc_server_killed_mid_generation_fails_that_request_only(server, servers):
    victim = servers[2]
    long = {"max_tokens": 48, "diffusion_steps": 400}
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(r=chat(server, "dream-rpc", **long)))
    thread.start()
    server.wait_status(lambda s: s["queue"].get("progress", {}).get("step", 0) >= 2, timeout=120)
    victim.stop()
    thread.join(120)
    r = result["r"]
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "inference_failed" and victim.endpoint in r.json()["error"]["message"]
    assert chat(server, "smollm2").status_code == 200  # the server keeps serving
    down = chat(server, "dream-rpc")
    assert down.status_code == 500 and down.json()["error"]["code"] == "model_load_failed"
    victim.start()  # the endpoint is back: the next request loads the model again
    again = chat(server, "dream-rpc")
    assert again.status_code == 200, again.text


def test_canvas_over_a_devices_capped_memory_is_refused_naming_it(make_server, model_paths, servers, server):
    server.stop()  # an rpc-server serves one client at a time: the other server's child lets go first
    live = make_server({"DEVICE_MEMORY_LIMIT_MB": "1"}, start=False)
    add_entries(live.home, model_paths, servers)
    live.start()
    r = chat(live, "llada-rpc", max_tokens=24)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "memory_budget_exceeded" and error["param"] == "max_tokens"
    assert "DEVICE_MEMORY_LIMIT_MB=1" in error["message"] and servers[1].endpoint in error["message"]


def test_idle_child_ends_and_the_next_request_starts_another(make_server, model_paths, tool, tmp_path):
    own = RPCServer(tool("ggml-rpc-server"), log_dir=tmp_path).start()
    try:
        live = make_server({"IDLE_TIMEOUT": "1"}, start=False)
        registry = json.loads((live.home / "model_map.json").read_text())
        registry["llada-own"] = {**registry["llada"], "rpc": [own.endpoint]}
        (live.home / "model_map.json").write_text(json.dumps(registry))
        live.start()
        assert chat(live, "llada-own", max_tokens=24).status_code == 200
        live.wait_status(lambda s: s["loaded_model"] is None and not s.get("model_process"), timeout=60)
        assert chat(live, "llada-own", max_tokens=24).status_code == 200
        assert sum("started child process" in line for line in live.log_lines()) == 2
    finally:
        own.stop()


def test_rpc_server_busy_with_another_client_cannot_hang_the_server(make_server, model_paths, tool, tmp_path):
    """An rpc-server serves one client at a time and the pinned client waits for it without a
    limit: the child is killed after LOAD_TIMEOUT + REQUEST_TIMEOUT of silence and the request fails."""
    own = RPCServer(tool("ggml-rpc-server"), log_dir=tmp_path).start()
    other = socket.create_connection(("127.0.0.1", own.port))  # another client, accepted, silent
    try:
        live = make_server({"LOAD_TIMEOUT": "3", "REQUEST_TIMEOUT": "3"}, start=False)
        registry = json.loads((live.home / "model_map.json").read_text())
        registry["llada-busy"] = {**registry["llada"], "rpc": [own.endpoint]}
        (live.home / "model_map.json").write_text(json.dumps(registry))
        live.start()
        r = chat(live, "llada-busy", max_tokens=24)
        assert r.status_code == 500 and r.json()["error"]["code"] == "inference_failed", r.text
        assert "SIGKILL" in r.json()["error"]["message"]
        assert chat(live, "llada", max_tokens=24).status_code == 200  # the server goes on
    finally:
        other.close()
        own.stop()
