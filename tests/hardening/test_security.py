"""Security: loopback by default, the API key on every endpoint but /v1/status, admin rules, the
folders models may be registered from, the body size limit, no stack traces in errors."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import FAST_ENV, LiveServer, write_registry
from in_process import in_process_server  # tests/server/in_process.py (conftest puts it on the path)

KEY = "hardening-key-7"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


def test_binds_loopback_by_default(make_server):
    from hoshikage.server.settings import Settings

    assert Settings(_env_file=None).host == "127.0.0.1"
    server = make_server(FAST_ENV)  # started without --host and without HOST
    assert "HOST" not in server.env or server.env["HOST"] == "127.0.0.1"
    assert listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, good_models):
    """In process (tests/server/in_process.py): a key is checked before any job exists."""
    with in_process_server(tmp_path_factory.mktemp("keyed"), good_models, api_key=KEY) as client:
        yield client


def every_route(client) -> list[tuple[str, str]]:
    schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    routes = [(method.upper(), path.replace("{name}", "smollm2"))
              for path, ops in schema["paths"].items() for method in ops]
    return routes + [("GET", "/openapi.json"), ("GET", "/docs")]


def test_api_key_guards_every_endpoint_except_status(keyed):
    routes = every_route(keyed)
    assert len(routes) >= 10
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "prompt": "Hi", "max_tokens": 1}
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": KEY}):
            r = keyed.request(method, path, headers=headers, json=body if method == "POST" else None)
            if path == "/v1/status":
                assert r.status_code == 200
            else:
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.json()["error"]["code"] == "invalid_api_key"
    # unknown paths do not tell whether they exist without the key either
    assert keyed.get("/v1/nothing-here").status_code in (401, 404)
    # with the key (both header forms), the guarded endpoints answer
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        assert keyed.get("/v1/models", headers=headers).status_code == 200
    assert KEY not in keyed.get("/v1/status").text
    assert keyed.app.state.hoshikage.runner.jobs == []  # nothing refused reached the worker


def test_admin_needs_the_key_when_one_is_set(keyed, good_models):
    body = {"name": "extra", "path": str(good_models["dream"])}
    assert keyed.post("/admin/models", json=body).status_code == 401
    r = keyed.post("/admin/models", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text


def test_admin_without_a_key_accepts_loopback_clients_only(make_server, good_models):
    server = make_server(FAST_ENV)
    body = {"name": "extra", "path": str(good_models["dream"])}
    assert httpx.post(server.url + "/admin/models", json=body).status_code == 200
    # A client reached through a reverse proxy on this machine: a request carrying X-Forwarded-For
    # came through a proxy, so it is not a local client (whatever address the header names).
    for method, path in (("POST", "/admin/models"), ("DELETE", "/admin/models/extra"), ("POST", "/admin/reload")):
        r = httpx.request(method, server.url + path, json=body if method == "POST" else None,
                          headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (path, r.text)
    assert httpx.get(server.url + "/v1/models", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200


def test_admin_registers_only_gguf_files_inside_the_allowed_folders(tmp_path, good_models):
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    shutil.copyfile(good_models["llada"], allowed / "ok.gguf")
    shutil.copyfile(good_models["llada"], outside / "elsewhere.gguf")
    (allowed / "link.gguf").symlink_to(outside / "elsewhere.gguf")
    (allowed / "notes.gguf").write_text("not a model at all")
    (allowed / "passwd-copy.gguf").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    home = tmp_path / "home"
    write_registry(home, good_models)
    server = LiveServer(home, {**FAST_ENV, "ADMIN_MODEL_DIRS": json.dumps([str(allowed)])}).start()
    try:
        def add(name: str, path: str) -> httpx.Response:
            return httpx.post(server.url + "/admin/models", json={"name": name, "path": path})

        assert add("ok", str(allowed / "ok.gguf")).status_code == 200
        for name, path, words in (
                ("outside", str(outside / "elsewhere.gguf"), "outside the folders"),
                ("traversal", str(allowed / ".." / "outside" / "elsewhere.gguf"), "outside the folders"),
                ("symlink", str(allowed / "link.gguf"), "outside the folders"),
                ("registered-elsewhere", str(good_models["smollm2"]), "outside the folders"),
                ("etc", "/etc/passwd", "outside the folders"),  # checked before opening (finding 5)
                ("text", str(allowed / "notes.gguf"), "not a GGUF file"),
                ("passwd", str(allowed / "passwd-copy.gguf"), "not a GGUF file"),
                ("dir", str(allowed), "directory"),
                ("missing", str(allowed / "missing.gguf"), "not found"),
                ("proc", "/proc/self/environ", "outside the folders")):
            r = add(name, path)
            assert r.status_code == 400, (name, r.text)
            err = r.json()["error"]
            assert err["param"] == "path" and words in err["message"], (name, err)
        names = {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
        assert "ok" in names and not names & {"outside", "traversal", "symlink", "etc", "text", "passwd"}
        assert httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
            "model": "ok", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
            "diffusion_steps": 2}).status_code == 200
    finally:
        server.stop()


def test_request_body_limit_on_every_endpoint(tmp_path, good_models):
    """In process (tests/server/in_process.py): the limit is the app's middleware, before any job.
    Bodies sent without a Content-Length: tests/hardening/test_bad_params.py (a live server)."""
    with in_process_server(tmp_path, good_models, max_request_bytes=65536) as server:
        big = json.dumps({"model": "smollm2", "prompt": "x" * 70_000, "name": "y", "path": "z"})
        for path in ("/v1/chat/completions", "/v1/completions", "/admin/models", "/admin/reload"):
            r = server.post(path, content=big, headers={"content-type": "application/json"})
            assert r.status_code == 413, (path, r.text)
            assert r.json()["error"] == {"message": "the request body is larger than MAX_REQUEST_BYTES=65536 bytes",
                                         "type": "invalid_request_error", "param": "body",
                                         "code": "request_too_large"}
        small = {"model": "smollm2", "prompt": "x" * 1000, "max_tokens": 1}
        assert server.post("/v1/completions", json=small).status_code == 200


def test_no_stack_trace_for_an_unexpected_error(tmp_path):
    """A bug in a route answers 500 internal_error in the error shape; the traceback goes to the log."""
    from fastapi.testclient import TestClient

    from hoshikage.server import create_app
    from hoshikage.server.settings import Settings

    app = create_app(Settings(hoshikage_home=tmp_path, ramdisk_path=None))
    state = app.state.hoshikage

    def broken():
        raise KeyError("secret internal detail /etc/something")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        state.registry.entries = broken
        r = client.get("/v1/models")
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and err["type"] == "server_error"
    assert "Traceback" not in r.text and "File \"" not in r.text and "secret internal detail" not in r.text
