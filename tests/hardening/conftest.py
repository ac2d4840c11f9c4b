"""Hardening tests: fuzzing, bad parameters, bad model files, load, faults, security, soak.

The live-server fixtures are those of tests/server/conftest.py (loaded from there, not copied):
``make_server(env)`` starts ``hoshikage serve`` on a free loopback port with its own
HOSHIKAGE_HOME, RAM-disk folder and log file. Every request goes to 127.0.0.1 only.

Sizes scale with environment variables so that ``make test`` runs the short versions and
``make fuzz`` / ``make load`` the long ones (see the Makefile and docs/reliability.md):
HOSHIKAGE_FUZZ_REQUESTS, HOSHIKAGE_LOAD_CLIENTS, HOSHIKAGE_LOAD_ROUNDS, HOSHIKAGE_SOAK_CYCLES.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("hoshikage_server_fixtures", HERE.parent / "server" / "conftest.py")
server_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = server_fixtures
_spec.loader.exec_module(server_fixtures)

LiveServer = server_fixtures.LiveServer
write_registry = server_fixtures.write_registry
free_port = server_fixtures.free_port
model_paths = server_fixtures.model_paths  # noqa: F811 - re-exported fixtures
make_server = server_fixtures.make_server

sys.path.insert(0, str(HERE))  # gguf_craft, loadgen
sys.path.insert(1, str(HERE.parent / "server"))  # in_process (the app in this process, a stub runner)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Settings every hardening server shares: a small context so that no request can run long on
# two shared cores, and short timeouts.
FAST_ENV = {"N_CTX": "256", "REQUEST_TIMEOUT": "20", "QUEUE_TIMEOUT": "60", "MAX_TOKENS": "16"}


@pytest.fixture(scope="session")
def good_models(model_paths) -> dict[str, Path]:
    return model_paths


LONG = os.environ.get("HOSHIKAGE_HARDENING_LONG") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "long: hardening cases run by `make load` only "
                                       "(HOSHIKAGE_HARDENING_LONG=1), not by `make test`")


def pytest_collection_modifyitems(config, items):
    if LONG:
        return
    skip = pytest.mark.skip(reason="long hardening case: `make load` runs it (HOSHIKAGE_HARDENING_LONG=1)")
    for item in items:
        if "long" in item.keywords and str(HERE) in str(item.fspath):
            item.add_marker(skip)
