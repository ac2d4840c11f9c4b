"""CORS (CORS_ORIGINS) against a live server: preflights and responses for allowed origins only, in
agreement with the Host check (a refused Host stays refused) and the admin rules (never opened)."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from in_process import in_process_server

from hoshikage.server.cors import OriginPolicy, allowed_headers, parse_rule
from hoshikage.server.settings import Settings

FAST = {"N_CTX": "256", "MAX_TOKENS": "2", "REQUEST_TIMEOUT": "30"}
LOCAL_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:8080", "http://[::1]:3000", "http://localhost",
                 "http://LOCALHOST:9")
FOREIGN_ORIGINS = ("http://evil.example", "https://localhost:5173", "http://localhost.evil.example",
                   "http://127.0.0.1.evil.example:80", "null", "http://localhost:5173/path", "file://",
                   "http://user@localhost:5173")
CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def preflight(server, path: str, origin: str, headers: dict | None = None, method: str = "POST") -> httpx.Response:
    """An OPTIONS preflight to a live server, or to an in-process one (a TestClient, in_process.py)."""
    headers = {"Origin": origin, "Access-Control-Request-Method": method,
               "Access-Control-Request-Headers": "authorization, content-type", **(headers or {})}
    if isinstance(server, TestClient):
        return server.options(path, headers=headers)
    return httpx.options(server.url + path, timeout=30, headers=headers)


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


@pytest.fixture(scope="module")
def server(make_server):
    return make_server(FAST)


def test_preflight_from_a_local_origin_is_granted(server):
    for origin in LOCAL_ORIGINS:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models"):
            r = preflight(server, path, origin)
            assert r.status_code == 204, (origin, path, r.status_code, r.text)
            assert r.headers["access-control-allow-origin"] == origin
            assert {"GET", "POST"} <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
            allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
            assert {"authorization", "content-type"} <= allowed
            assert int(r.headers["access-control-max-age"]) > 0
            assert "access-control-allow-credentials" not in r.headers
            assert "Origin" in r.headers["vary"]


def test_the_openai_js_sdk_headers_are_allowed(server):
    asked = "authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-retry-count"
    r = preflight(server, "/v1/chat/completions", "http://localhost:5173",
                  {"Access-Control-Request-Headers": asked})
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in asked.split(",")} <= allowed


def test_preflight_from_another_origin_is_refused(server):
    for origin in FOREIGN_ORIGINS:
        r = preflight(server, "/v1/chat/completions", origin)
        assert r.status_code == 403, (origin, r.status_code, r.text)
        assert r.json()["error"]["code"] == "forbidden" and "CORS_ORIGINS" in r.json()["error"]["message"]
        assert not cors_headers(r), (origin, r.headers)
    r = preflight(server, "/v1/chat/completions", "http://localhost:5173", method="DELETE")
    assert r.status_code == 403 and not cors_headers(r)


def test_responses_carry_the_origin_for_allowed_origins_only(server):
    origin = "http://localhost:5173"
    r = httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers={"Origin": origin}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == origin and "Origin" in r.headers["vary"]
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                      headers={"Origin": origin}, timeout=120) as streamed:
        assert streamed.headers["access-control-allow-origin"] == origin
        assert "[DONE]" in streamed.read().decode()
    bad = httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", "messages": []},
                     headers={"Origin": origin})
    assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == origin  # errors readable too
    for foreign in FOREIGN_ORIGINS:
        r = httpx.get(server.url + "/v1/models", headers={"Origin": foreign})
        assert r.status_code == 200 and not cors_headers(r), foreign
    assert not cors_headers(httpx.get(server.url + "/v1/models"))  # no Origin: not a CORS request


def test_a_refused_host_stays_refused(server):
    for host in ("evil.example", f"evil.example:{server.port}"):
        r = preflight(server, "/v1/chat/completions", "http://localhost:5173", {"Host": host})
        assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
        assert not cors_headers(r)
        r = httpx.post(server.url + "/v1/chat/completions", json=CHAT,
                       headers={"Host": host, "Origin": "http://localhost:5173"})
        assert r.status_code == 400 and not cors_headers(r)
    for host in (f"localhost:{server.port}", f"[::1]:{server.port}"):  # the names the server answers to
        assert preflight(server, "/v1/models", "http://localhost:5173", {"Host": host}).status_code == 204


def test_admin_routes_stay_same_origin_only(server):
    before = (server.home / "model_map.json").read_bytes()
    for origin in ("http://localhost:5173", "http://127.0.0.1:8080"):
        for path in ("/admin/reload", "/admin/models", "/admin/models/smollm2"):
            r = preflight(server, path, origin)
            assert r.status_code >= 400 and not cors_headers(r), (path, r.status_code, r.headers)
        r = httpx.post(server.url + "/admin/reload", headers={"Origin": origin, "Content-Type": "application/json"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden" and not cors_headers(r)
        r = httpx.delete(server.url + "/admin/models/smollm2", headers={"Origin": origin})
        assert r.status_code == 403 and not cors_headers(r)
    assert (server.home / "model_map.json").read_bytes() == before
    same = httpx.post(server.url + "/admin/reload", headers={"Origin": server.url, "Content-Type": "application/json"})
    assert same.status_code == 200, same.text


def test_status_shows_no_file_paths_to_another_origin(server):
    assert httpx.post(server.url + "/v1/chat/completions", json=CHAT, timeout=120).status_code == 200
    assert "loaded_from" in server.status()  # a local client, not a browser page: an admin caller
    for headers in ({"Origin": "http://localhost:5173"}, {"Sec-Fetch-Site": "cross-site"}):
        r = httpx.get(server.url + "/v1/status", headers=headers)
        assert r.status_code == 200 and "loaded_from" not in r.json() and "ramdisk_copies" not in r.json()
        assert str(server.home) not in r.text


def test_cors_origins_setting(tmp_path, smollm2_path):
    """In process (in_process.py): preflights and a model list never reach the worker."""
    custom_origins, models = "https://app.example.com, http://box.lan:8080", {"smollm2": Path(smollm2_path)}
    with in_process_server(tmp_path / "custom", models, cors_origins=custom_origins) as custom:
        assert preflight(custom, "/v1/models", "https://app.example.com").status_code == 204
        assert preflight(custom, "/v1/models", "https://app.example.com:443").status_code == 204  # default port
        assert preflight(custom, "/v1/models", "http://box.lan:8080").status_code == 204
        for origin in ("http://box.lan:8081", "http://app.example.com", "http://localhost:5173"):
            assert preflight(custom, "/v1/models", origin).status_code == 403, origin
    with in_process_server(tmp_path / "anyone", models, cors_origins="*") as anyone:
        r = preflight(anyone, "/v1/models", "http://evil.example")
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
        r = anyone.get("/v1/models", headers={"Origin": "null"})
        assert r.headers["access-control-allow-origin"] == "*"
        r = preflight(anyone, "/admin/reload", "http://evil.example")  # '*' still leaves admin closed
        assert r.status_code >= 400 and not cors_headers(r)


# -- units ------------------------------------------------------------------------------------------

def test_origin_rules():
    default = OriginPolicy(Settings(_env_file=None).cors_origins)
    assert all(default.allows(o) for o in LOCAL_ORIGINS)
    assert not any(default.allows(o) for o in FOREIGN_ORIGINS)
    assert not default.allows("http://[::2]:80") and not default.allows("http://localhost:99999")
    exact = OriginPolicy(["http://box.lan:8080"])
    assert exact.allows("http://box.lan:8080") and not exact.allows("http://box.lan")
    assert OriginPolicy(["http://box.lan"]).allows("http://box.lan:80")
    assert parse_rule("*") is None


@pytest.mark.parametrize("entry", ["localhost:*", "http://localhost/", "http://localhost:*/x", "http://:80",
                                   "http://a@localhost", "http://localhost:8080:*", "http://localhost:port"])
def test_bad_cors_origins_are_refused(entry):
    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        Settings(_env_file=None, cors_origins=entry)


def test_allowed_headers_keep_only_header_names():
    names = allowed_headers("X-Stainless-OS, bad header, <script>, authorization," + ",".join(["x"] * 40))
    assert names[:3] == ["Authorization", "Content-Type", "X-API-Key"]
    assert "X-Stainless-OS" in names and "bad header" not in names and "<script>" not in names
    assert names.count("x") == 1


# -- a real browser (when chromium is installed) ---------------------------------------------------

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const api = new URLSearchParams(location.search).get("api");
async function attempt(name, url, init) {
  try { const r = await fetch(url, init); const j = await r.json();
        return name + "=" + r.status + (("loaded_from" in j) ? ":paths" : ""); }
  catch (e) { return name + "=blocked"; }
}
(async () => {
  const json = {"Content-Type": "application/json", "Authorization": "Bearer unused"};
  const out = [await attempt("embed", api + "/v1/embeddings", {method: "POST", headers: json,
                                                              body: JSON.stringify({model: "smollm2", input: "Hi"})}),
               await attempt("status", api + "/v1/status", {}),
               await attempt("admin", api + "/admin/reload", {method: "POST", headers: json})];
  document.getElementById("out").textContent = "RESULT " + out.join(" ") + " END";
})();
</script></body></html>"""


def _serve_page(host: str, folder) -> tuple:
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://{host}:{httpd.server_address[1]}"


def test_a_real_browser_page_on_another_local_port(server, tmp_path):
    """chromium --headless runs a page's fetch() calls: a page on http://127.0.0.1:<port> may use the
    API (a preflighted JSON POST with Authorization) but not admin; a page on 127.0.0.2 (not in
    CORS_ORIGINS) is blocked by the browser."""
    import re
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the httpx tests above cover the headers")
    (tmp_path / "index.html").write_text(PAGE)
    results = {}
    for host in ("127.0.0.1", "127.0.0.2"):
        httpd, origin = _serve_page(host, tmp_path)
        try:
            dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=30000",
                                  "--dump-dom", f"{origin}/index.html?api={server.url}"],
                                 capture_output=True, text=True, timeout=120).stdout
        finally:
            httpd.shutdown()
        found = re.search(r"RESULT (.*?) END", dom)
        assert found, dom[-2000:]
        results[host] = found.group(1)
    assert results["127.0.0.1"] == "embed=200 status=200 admin=blocked", results
    assert results["127.0.0.2"] == "embed=blocked status=blocked admin=blocked", results
