"""Real clients against a live server: LangChain (``langchain-openai``) and the ``llm`` CLI.

The openai SDK is covered by tests/server (test_server_structured.py, test_server_embeddings.py).
The live-server fixtures are those of tests/server/conftest.py (loaded from there, not copied,
as tests/hardening/conftest.py does). No client may reach the internet: every test here runs with
connections to anything but a loopback address refused in this process (tiktoken, for one,
downloads its encodings on first use), so a client that tries fails at once, saying so.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import socket
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("hoshikage_server_fixtures", HERE.parent / "server" / "conftest.py")
if _spec.name in sys.modules:  # tests/hardening loaded it already in this session
    server_fixtures = sys.modules[_spec.name]
else:
    server_fixtures = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = server_fixtures
    _spec.loader.exec_module(server_fixtures)

LiveServer = server_fixtures.LiveServer
model_paths = server_fixtures.model_paths  # noqa: F811 - re-exported fixtures
make_server = server_fixtures.make_server

# What a client would need the internet for gets this error instead of a hang or a retry loop.
OFFLINE = "tests/clients: a connection to a non-loopback address was refused (no internet at test time)"


def _is_loopback(address) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return isinstance(address, (str, bytes))  # AF_UNIX paths


@pytest.fixture
def offline_message() -> str:
    return OFFLINE


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"{OFFLINE}: {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"{OFFLINE}: {address!r}")
        return real_connect_ex(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):  # not even a DNS query leaves the machine
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_loopback((name,)):
            raise socket.gaierror(socket.EAI_NONAME, f"{OFFLINE}: {name!r}")
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(scope="package")
def server(tmp_path_factory, model_paths):
    """One SmolLM2 server for every client test (LangChain and llm share it)."""
    home = tmp_path_factory.mktemp("hoshikage-clients")
    server_fixtures.write_registry(home, model_paths)
    live = LiveServer(home, {"N_CTX": "1024", "REQUEST_TIMEOUT": "120", "MAX_TOKENS": "96"}).start()
    yield live
    try:
        live.stop()
    except AssertionError:
        pass
