"""Shared fixtures. Models are located or generated at test time, never committed.

The native build is a prerequisite (``make test`` runs build_llama.py first): the fixtures here
(``native_build``, ``smollm2``, ``tool``) fail loudly rather than skip, so a broken build cannot
pass CI. Some tests do skip, each saying why, when an optional extra is missing: a reference
tool the build may lack (llama-embedding), g++ or a cached llama.cpp source tree for the C++
harnesses of tests/sampling, glibc's libm, chromium, schemathesis, root, /dev/full; and the long
hardening cases unless HOSHIKAGE_HARDENING_LONG=1.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def native_build():
    from hoshikage import _ffi

    return _ffi.native_build()


@pytest.fixture(scope="session")
def smollm2_path():
    from hoshikage.default_models import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from hoshikage import Model

    with Model(smollm2_path) as model:
        yield model


@pytest.fixture(scope="session")
def tool(native_build):
    """Path of a reference program built from the same llama.cpp source."""

    def get(name: str) -> str:
        path = native_build.tools.get(name)
        if path is None:
            raise AssertionError(f"{name} is not in the build manifest; run build_llama.py")
        return path

    return get


@pytest.fixture(scope="session")
def rpc_servers(tool, tmp_path_factory):
    """Two loopback rpc-server processes (CPU backend, 127.0.0.1, free ports) for the session."""
    from hoshikage.testing.rpc_servers import start_servers

    servers = start_servers(tool("ggml-rpc-server"), count=2, log_dir=tmp_path_factory.mktemp("rpc"))
    yield servers
    for server in servers:
        server.stop()
