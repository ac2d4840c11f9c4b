"""Security, round two: who reaches the server and how (docs/reliability.md section 8, rows 2, 7, 8, 13).

Each test sends the attack to a live ``hoshikage serve`` on 127.0.0.1 and checks three things: a
clear 4xx in the error shape (or a refusal at start-up), the server still answering, and the
registry (``model_map.json`` in the server's HOSHIKAGE_HOME) unchanged with every model listed.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import FAST_ENV, free_port
from in_process import in_process_server  # tests/server/in_process.py (conftest puts it on the path)

from hoshikage.server.access import is_loopback_address
from hoshikage.server.serve import host_warning, uvicorn_config
from hoshikage.server.settings import Settings

MODELS = {"smollm2", "llada", "dream"}
KEY, ADMIN_KEY = "user-key-2", "admin-key-8"
JSON = {"Content-Type": "application/json"}


def registry_bytes(server) -> bytes:
    return (server.home / "model_map.json").read_bytes()


def assert_still_fine(server, registry_before: bytes, headers: dict | None = None) -> None:
    """The server answers, the registry file is unchanged and every model is still listed."""
    assert server.proc.poll() is None, server.output()
    assert server.status()["status"] == "ok"
    listed = httpx.get(server.url + "/v1/models", headers=headers or server.headers(), timeout=10)
    assert listed.status_code == 200, listed.text
    assert MODELS <= {m["id"] for m in listed.json()["data"]}
    assert registry_bytes(server) == registry_before


def assert_error(r: httpx.Response, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    for word in words:
        assert word in err["message"], (word, err["message"])
    return err


def admin_attacks(server, good_models) -> list[tuple[str, str, dict]]:
    """The three admin routes, each with a body that would change the registry if accepted."""
    return [("POST", "/admin/models", {"json": {"name": "planted", "path": str(good_models["dream"])}}),
            ("DELETE", "/admin/models/smollm2", {}),
            ("POST", "/admin/reload", {"headers": dict(JSON)})]


@pytest.fixture(scope="module")
def server(make_server):
    return make_server(FAST_ENV)


@pytest.fixture(scope="module")
def keyed(make_server):
    return make_server({**FAST_ENV, "API_KEY": KEY, "ADMIN_API_KEY": ADMIN_KEY})


# -- 2. DNS rebinding and cross-site admin requests -------------------------------------------------

def test_dns_rebinding_host_is_refused_on_every_route(server, good_models):
    before = registry_bytes(server)
    schema = httpx.get(server.url + "/openapi.json").json()
    routes = [(m.upper(), p.replace("{name}", "smollm2")) for p, ops in schema["paths"].items() for m in ops]
    routes += [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/v1/nothing-here")]
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "prompt": "Hi", "max_tokens": 1,
            "name": "planted", "path": str(good_models["dream"])}
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example", "localhost.evil"):
        for method, path in routes:
            r = httpx.request(method, server.url + path, headers={"Host": host}, timeout=30,
                              json=body if method == "POST" else None)
            err = assert_error(r, 400, "host_not_allowed", repr(host), "ALLOWED_HOSTS")
            assert err["param"] == "host"
    assert_still_fine(server, before)
    # The names the server does answer to, with or without a port, in any case.
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", "localhost", f"LOCALHOST:{server.port}", "[::1]",
                 f"[::1]:{server.port}"):
        assert httpx.get(server.url + "/v1/models", headers={"Host": host}).status_code == 200, host


def test_a_cross_site_form_cannot_trigger_admin(server, good_models):
    before = registry_bytes(server)
    form_types = ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x")
    for ctype in form_types:  # what a plain HTML form can send, with or without a body
        for path, content in (("/admin/reload", ""), ("/admin/models", f"name=planted&path={good_models['dream']}")):
            r = httpx.post(server.url + path, content=content, headers={"Content-Type": ctype})
            assert_error(r, 403, "forbidden", "Content-Type: application/json")
    r = httpx.post(server.url + "/admin/reload")  # no body, no type: what a form with no fields sends
    assert_error(r, 403, "forbidden", "Content-Type: application/json")
    # A browser's cross-site request, even one with the JSON type (after a preflight it would get).
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://localhost:8080"}):
        for method, path, kw in admin_attacks(server, good_models):
            r = httpx.request(method, server.url + path, **{**kw, "headers": {**JSON, **headers}})
            assert_error(r, 403, "forbidden", "another")
    # A script on another site would first need a CORS preflight for the JSON type: never granted.
    r = httpx.options(server.url + "/admin/reload", headers={"Origin": "http://evil.example",
                      "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert r.status_code >= 400 and not any(h.startswith("access-control-") for h in r.headers), r.headers
    assert_still_fine(server, before)
    # The same-origin request (curl, a script, the server's own /docs page) still works.
    same = {**JSON, "Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    r = httpx.post(server.url + "/admin/reload", headers=same)
    assert r.status_code == 200 and MODELS <= set(r.json()["models"]), r.text


def test_allowed_hosts_adds_names(tmp_path, good_models):
    """In process (tests/server/in_process.py): the Host check is the app's outermost middleware."""
    with in_process_server(tmp_path, good_models, allowed_hosts="models.lan, Box.Example") as named:
        before = (tmp_path / "model_map.json").read_bytes()
        for host in ("models.lan", "models.lan:3030", "box.example", "localhost"):
            assert named.get("/v1/models", headers={"Host": host}).status_code == 200, host
        r = named.post("/admin/reload", headers={**JSON, "Host": "evil.example"})
        assert_error(r, 400, "host_not_allowed", "models.lan", "ALLOWED_HOSTS")
        assert MODELS <= {m["id"] for m in named.get("/v1/models").json()["data"]}
        assert (tmp_path / "model_map.json").read_bytes() == before


def test_allowed_hosts_star_turns_the_check_off(tmp_path):
    from fastapi.testclient import TestClient

    from hoshikage.server import create_app

    app = create_app(Settings(hoshikage_home=tmp_path, ramdisk_path=None, allowed_hosts=["*"]))
    with TestClient(app, base_url="http://anything.example") as client:
        assert client.get("/v1/models").status_code == 200


# -- 7. /v1/status without credentials ---------------------------------------------------------------

def test_status_shows_file_paths_to_admin_callers_only(keyed, good_models):
    before = registry_bytes(keyed)
    user, admin = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = httpx.post(keyed.url + "/v1/completions", headers=user, timeout=120,
                   json={"model": "smollm2", "prompt": "Hi", "max_tokens": 1})
    assert r.status_code == 200, r.text
    secrets = (str(good_models["smollm2"]), str(keyed.ramdisk), str(keyed.home))
    for headers in ({}, user, {"Authorization": "Bearer wrong"}):
        r = httpx.get(keyed.url + "/v1/status", headers=headers)
        assert r.status_code == 200
        status = r.json()
        assert status["loaded_model"] == "smollm2" and status["kind"] == "autoregressive"
        assert "memory" in status and "queue" in status
        assert "loaded_from" not in status and "ramdisk_copies" not in status, status
        assert not any(s in r.text for s in secrets), r.text
    full = httpx.get(keyed.url + "/v1/status", headers=admin).json()
    assert full["loaded_from"] == str(good_models["smollm2"]) or full["loaded_from"].startswith(str(keyed.ramdisk))
    assert_still_fine(keyed, before, headers=user)


def test_status_hides_paths_from_proxied_clients_of_a_keyless_server(server, good_models):
    r = httpx.post(server.url + "/v1/completions", timeout=120, json={"model": "smollm2", "prompt": "Hi",
                                                                       "max_tokens": 1})
    assert r.status_code == 200, r.text
    before = registry_bytes(server)
    r = httpx.get(server.url + "/v1/status", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200 and "loaded_from" not in r.json()
    assert str(good_models["smollm2"]) not in r.text and str(server.ramdisk) not in r.text
    assert "loaded_from" in server.status()  # a local client may use the admin endpoints: it sees them
    assert_still_fine(server, before)


# -- admin keys ----------------------------------------------------------------------------------------

def test_admin_api_key_is_needed_for_admin_when_set(keyed, good_models):
    before = registry_bytes(keyed)
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Authorization": "Bearer x"}):
        for method, path, kw in admin_attacks(keyed, good_models):
            r = httpx.request(method, keyed.url + path, **{**kw, "headers": {**kw.get("headers", {}), **headers}})
            assert_error(r, 401, "invalid_api_key", "ADMIN_API_KEY")
    assert_still_fine(keyed, before, headers={"Authorization": f"Bearer {KEY}"})
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(keyed.url + "/v1/models", headers=admin).status_code == 200  # opens the API too
    r = httpx.post(keyed.url + "/admin/reload", headers=admin)  # a key needs no JSON type: no form can send it
    assert r.status_code == 200 and MODELS <= set(r.json()["models"]), r.text


def _serve_refuses(home, env: dict[str, str], *words: str) -> None:
    import os

    proc = subprocess.run([sys.executable, "-m", "hoshikage", "serve", "--port", str(free_port())], cwd=home,
                          env={**os.environ, "HOSHIKAGE_HOME": str(home), "RAMDISK_PATH": "", **env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


def test_bad_access_settings_are_refused_at_start(tmp_path):
    _serve_refuses(tmp_path, {"API_KEY": "same", "ADMIN_API_KEY": "same"}, "ADMIN_API_KEY must differ")
    _serve_refuses(tmp_path, {"ALLOWED_HOSTS": "http://evil.example/"}, "ALLOWED_HOSTS", "http://evil.example/")
    _serve_refuses(tmp_path, {"TRUSTED_PROXIES": "my-nginx"}, "TRUSTED_PROXIES", "my-nginx")


# -- 8. forwarding headers and "local" clients ----------------------------------------------------------

def test_forwarded_for_does_not_make_a_client_local(server, good_models):
    """A local tunnel (socat, ssh -R) adds no header; an attacker adds X-Forwarded-For: 127.0.0.1."""
    before = registry_bytes(server)
    for headers in ({"X-Forwarded-For": "127.0.0.1"}, {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"},
                    {"X-Forwarded-For": "localhost"}, {"Forwarded": "for=127.0.0.1"}, {"X-Real-IP": "::1"}):
        for method, path, kw in admin_attacks(server, good_models):
            r = httpx.request(method, server.url + path, **{**kw, "headers": {**JSON, **headers}})
            # Proxy headers are not believed (no TRUSTED_PROXIES): the client is the socket's peer.
            assert_error(r, 403, "forbidden", "this client: 127.0.0.1, through a proxy", "API_KEY")
    assert_still_fine(server, before)


def test_trusted_proxies_turns_proxy_headers_on(make_server, good_models):
    proxied = make_server({**FAST_ENV, "TRUSTED_PROXIES": "127.0.0.1"})
    before = registry_bytes(proxied)
    for method, path, kw in admin_attacks(proxied, good_models):
        r = httpx.request(method, proxied.url + path, **{**kw, "headers": {**JSON, "X-Forwarded-For": "203.0.113.9"}})
        assert_error(r, 403, "forbidden", "this client: 203.0.113.9")  # uvicorn believed the proxy
    r = httpx.post(proxied.url + "/admin/reload", headers={**JSON, "X-Forwarded-For": "127.0.0.1"})
    assert_error(r, 403, "forbidden", "through a proxy")  # believed, yet a forwarded request is not local
    assert_still_fine(proxied, before)


def test_proxy_settings_reach_uvicorn():
    plain = uvicorn_config(Settings(_env_file=None), app=None)
    assert plain.proxy_headers is False
    trusted = uvicorn_config(Settings(_env_file=None, trusted_proxies="10.0.0.0/8, 127.0.0.1"), app=None)
    assert trusted.proxy_headers is True and trusted.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]


def test_a_wildcard_bind_without_allowed_hosts_is_warned_about():
    assert "ALLOWED_HOSTS" in host_warning(Settings(_env_file=None, host="0.0.0.0"))
    assert host_warning(Settings(_env_file=None, host="0.0.0.0", allowed_hosts="box.lan")) is None
    assert host_warning(Settings(_env_file=None)) is None


def test_only_loopback_addresses_are_loopback():
    assert not any(map(is_loopback_address, ("localhost", "LOCALHOST", "127.0.0.1.evil", "", None, "testclient")))
    assert all(map(is_loopback_address, ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1")))


# -- 13. idle and slow connections ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bounded(make_server):
    return make_server({**FAST_ENV, "READ_TIMEOUT": "5", "MAX_CONNECTIONS": "6"})


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _assert_408(data: bytes) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data[:200]
    err = json.loads(body)["error"]
    assert err["code"] == "request_timeout" and "READ_TIMEOUT=5" in err["message"], err


def test_slow_and_idle_connections_are_closed(bounded):
    before = registry_bytes(bounded)
    idle = _connect(bounded)  # opens and sends nothing
    partial = _connect(bounded)  # slowloris: headers that never end
    partial.sendall(b"POST /admin/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
    slow_body = _connect(bounded)  # headers whole, body never complete
    slow_body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"model\": ")
    for sock in (idle, partial, slow_body):
        with sock:
            _assert_408(_read_all(sock))
    assert_still_fine(bounded, before)
    assert "Traceback" not in "\n".join(bounded.log_lines())


def test_past_max_connections_the_longest_idle_is_closed(bounded):
    before = registry_bytes(bounded)
    time.sleep(0.5)  # let the server notice the earlier tests' closed connections (they count until then)
    idle = [_connect(bounded) for _ in range(6)]  # MAX_CONNECTIONS of them, sending nothing
    try:
        time.sleep(0.5)  # all six accepted before the next one
        assert httpx.get(bounded.url + "/v1/status").status_code == 200  # a 7th: the oldest idle one goes
        assert idle[0].recv(4096) == b""  # closed without an answer (it never asked anything)
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)
    assert_still_fine(bounded, before)


def test_past_max_connections_all_busy_gets_429(bounded):
    before = registry_bytes(bounded)
    time.sleep(0.5)
    busy = [_connect(bounded) for _ in range(6)]
    for sock in busy:  # each one's request is in progress: its body is still coming
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
    try:
        time.sleep(0.5)  # the six requests have reached the server
        with httpx.Client(base_url=bounded.url) as extra:
            r = extra.get("/v1/status")
        err = assert_error(r, 429, "server_busy", "MAX_CONNECTIONS=6")
        assert err["type"] == "rate_limit_error" and r.headers["connection"] == "close"
        for sock in busy:  # and READ_TIMEOUT ends the six
            _assert_408(_read_all(sock))
    finally:
        for sock in busy:
            sock.close()
    time.sleep(0.5)
    assert_still_fine(bounded, before)
