"""Faults: each gives a clear error for that request only, and the next request succeeds.

- the model file disappears, or is replaced by a broken one, between an idle unload and the
  reload;
- the RAM disk cannot take the copy (no room, a read-only file system, a file in the way);
- the log path cannot be written (at start, and every write failing: /dev/full);
- a generation raises inside the worker (before it starts, and in the middle of a stream);
- the build cache is missing or corrupt (the error says how to rebuild);
- SIGKILL during ``hoshikage add``, a registry write, or the server's admin writes: the
  registry is still valid afterwards.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import FAST_ENV, HERE, LONG, LiveServer, write_registry

HI = [{"role": "user", "content": "Hi"}]


def ask(server, model: str = "smollm2", content: str = "Hi", **kw) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=120, headers=server.headers(),
                      json={"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 3,
                            "diffusion_steps": 2, **kw})


def error_of(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and "Traceback" not in err["message"], err
    return err["message"]


def start(tmp_path: Path, models: dict, env: dict, extra_entries: dict | None = None, **kw) -> LiveServer:
    home = tmp_path / "home"
    write_registry(home, models)
    if extra_entries:
        entries = json.loads((home / "model_map.json").read_text())
        entries.update(extra_entries)
        (home / "model_map.json").write_text(json.dumps(entries))
    server = LiveServer(home, {**FAST_ENV, **env})
    for key, value in kw.items():
        setattr(server, key, value)
    return server.start()


# -- the model file between an idle unload and the reload ---------------------------------------

def test_model_file_vanishes_or_breaks_between_idle_unload_and_reload(tmp_path, good_models):
    victim = tmp_path / "models" / "victim.gguf"
    victim.parent.mkdir()
    shutil.copyfile(good_models["llada"], victim)
    server = start(tmp_path, good_models, {"IDLE_TIMEOUT": "1"},
                   {"victim": {"path": str(victim), "stop": [], "max_tokens": 8}})
    try:
        unloaded = lambda s: s["loaded_model"] is None  # noqa: E731
        assert ask(server, "victim").status_code == 200
        assert server.status()["ramdisk_copies"], "the RAM-disk copy exists, yet the original is checked"
        server.wait_status(unloaded)
        aside = tmp_path / "aside.gguf"
        victim.rename(aside)  # gone
        msg = error_of(ask(server, "victim"), 500, "model_load_failed")
        assert str(victim) in msg and "not found" in msg
        assert ask(server, "smollm2").status_code == 200  # other models unaffected
        server.wait_status(unloaded)
        aside.rename(victim)  # back
        assert ask(server, "victim").status_code == 200
        server.wait_status(unloaded)
        with open(victim, "r+b") as f:  # cut short (a half-written copy, a failing disk)
            f.truncate(victim.stat().st_size // 3)
        msg = error_of(ask(server, "victim"), 500, "model_load_failed")
        assert str(victim) in msg
        shutil.copyfile(good_models["llada"], victim)  # repaired
        assert ask(server, "victim").status_code == 200
        server.wait_status(unloaded)
        victim.unlink()
        victim.mkdir()  # a directory where the file was
        assert "directory" in error_of(ask(server, "victim"), 500, "model_load_failed")
        assert ask(server, "dream").status_code == 200
    finally:
        server.stop()


# -- the RAM disk ------------------------------------------------------------------------------

@pytest.mark.long
@pytest.mark.parametrize("where", ["read-only file system", "a file in the way"])
def test_ramdisk_unusable_loads_from_the_original(tmp_path, good_models, where):
    if where == "read-only file system":
        ramdisk = "/proc"  # read-only even for root
    else:
        ramdisk = str(tmp_path / "ramdisk")
        os.makedirs(ramdisk)
        Path(ramdisk, "hoshikage").write_text("not a folder")
    server = start(tmp_path, good_models, {"RAMDISK_PATH": ramdisk})
    try:
        r = ask(server, "llada")
        assert r.status_code == 200, r.text
        status = server.status()
        assert status["loaded_from"] == str(good_models["llada"]) and not status["ramdisk_copies"]
        assert ask(server, "smollm2").status_code == 200
    finally:
        server.stop()


def test_ramdisk_full_during_the_copy(tmp_path, good_models, monkeypatch, caplog):
    """ENOSPC in the middle of the copy: the half-written copy is removed, the model is loaded from
    the original; and when the RAM disk reports too little room, no copy is tried."""
    from hoshikage.server import residency as residency_mod
    from hoshikage.server.registry import ModelEntry
    from hoshikage.server.settings import Settings

    ramdisk = tmp_path / "shm"
    ramdisk.mkdir()
    settings = Settings(hoshikage_home=tmp_path, ramdisk_path=ramdisk, probe_models=False, n_threads=1)
    res = residency_mod.Residency(settings)
    entry = ModelEntry(name="llada", path=Path(good_models["llada"]))

    def full_copy(src, fd, deadline):  # residency._copy_into: writes the open temporary file
        with os.fdopen(fd, "wb") as f:
            f.write(b"GGUF" + b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(residency_mod, "_copy_into", full_copy)
    model = res.acquire(entry)
    assert res.loaded_from == entry.path and not model.closed
    assert not list((ramdisk / "hoshikage").iterdir()), "the partial copy was left behind"
    assert "RAM-disk copy" in caplog.text and "No space left" in caplog.text
    res.unload("test")
    monkeypatch.setattr(residency_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 1024))
    res.acquire(entry)
    assert res.loaded_from == entry.path and "not enough free space" in caplog.text
    res.shutdown()


# -- the log ------------------------------------------------------------------------------------

@pytest.mark.parametrize("log_path", [pytest.param("/proc/hoshikage-test.log", marks=pytest.mark.long),
                                      "directory", pytest.param("/dev/full", marks=pytest.mark.long)])
def test_unwritable_log_path(tmp_path, good_models, log_path):
    if log_path == "/dev/full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    if log_path == "directory":
        log_path = str(tmp_path)
    server = start(tmp_path, good_models, {"LOG_FILE_PATH": log_path})
    try:
        for model in ("smollm2", "dream"):
            assert ask(server, model).status_code == 200
        out = server.stdout_path.read_text(errors="replace")
        if log_path == "/dev/full":  # every write fails: logging reports it on stderr and goes on
            assert "Logging error" in out or "No space left" in out
        else:
            assert "cannot write the log file" in out and "logging to stdout" in out
            assert "model=smollm2 kind=autoregressive" in out  # the request lines went to stdout
        assert server.proc.poll() is None
    finally:
        server.stop()


# -- an exception inside the worker ------------------------------------------------------------

def test_exception_inside_the_worker(tmp_path, good_models):
    home = tmp_path / "home"
    write_registry(home, good_models)
    server = LiveServer(home, {**FAST_ENV, "HOSHIKAGE_FAULTS": "1",
                               "PYTHONPATH": os.pathsep.join([str(HERE / "fault_site"),
                                                              os.environ.get("PYTHONPATH", "")])}).start()
    try:
        for model in ("smollm2", "dream"):
            msg = error_of(ask(server, model, "RAISE-BEFORE please"), 500, "inference_failed")
            assert "injected fault" in msg
            assert ask(server, model).status_code == 200
        # In the middle of a stream: an explicit error event, then [DONE].
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=120,
                          json={"model": "smollm2", "stream": True, "max_tokens": 8,
                                "messages": [{"role": "user", "content": "RAISE-MIDSTREAM"}]}) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "inference_failed"
        msg = error_of(ask(server, "smollm2", "RAISE-MIDSTREAM"), 500, "inference_failed")
        assert "MemoryError" in msg or "injected" in msg
        # The next requests, on the same model (its context was left mid-generation) and another.
        r = ask(server, "smollm2", "Name a colour.", temperature=0)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        assert ask(server, "llada").status_code == 200
        assert server.status()["requests"]["failed"] == 4
        assert server.proc.poll() is None
    finally:
        server.stop()


# -- the native build cache --------------------------------------------------------------------

def test_missing_or_corrupt_build_cache(tmp_path, good_models, native_build):
    cache = tmp_path / "cache"
    build = cache / "b"
    build.mkdir(parents=True)
    real = native_build.manifest
    shutil.copyfile(real["cdef"], build / "llama_cdef.h")
    (build / "libllama.so").write_bytes(b"\x7fELF not really")
    (build / "hoshikage-build.json").write_text(json.dumps({**real, "library": str(build / "libllama.so"),
                                                            "cdef": str(build / "llama_cdef.h")}))
    server = start(tmp_path, good_models, {"HOSHIKAGE_CACHE_DIR": str(cache), "HOME": str(tmp_path)})
    try:
        # 1. nothing built yet (no current.json)
        msg = error_of(ask(server), 500, "model_load_failed")
        assert "build_llama.py" in msg, msg
        # 2. current.json is not JSON
        (cache / "current.json").write_text("{broken")
        msg = error_of(ask(server, "dream"), 500, "model_load_failed")
        assert "unreadable" in msg and "build_llama.py" in msg, msg
        # 3. it points at a library that is not one
        (cache / "current.json").write_text(json.dumps({"build_dir": str(build)}))
        msg = error_of(ask(server), 500, "model_load_failed")
        assert "could not be opened" in msg and "build_llama.py" in msg, msg
        # 4. repaired (as a rebuild would): the next request works, no restart needed
        shutil.copyfile(real["library"], build / "libllama.so")
        assert ask(server).status_code == 200
        assert ask(server, "llada").status_code == 200
    finally:
        server.stop()


# -- SIGKILL during registry writes -------------------------------------------------------------

def _registry_ok(home: Path, must_have: set[str]) -> dict:
    raw = json.loads((home / "model_map.json").read_text())
    assert isinstance(raw, dict) and must_have <= set(raw), sorted(raw)
    for name, entry in raw.items():
        assert isinstance(entry, dict) and isinstance(entry.get("path"), str), (name, entry)
    return raw


WRITER = r"""
import sys
from pathlib import Path
from hoshikage.server.registry import ModelEntry, Registry
reg = Registry(sys.argv[1])
i = 0
print("ready", flush=True)
while True:
    reg.add(ModelEntry(name=f"w{i % 50}", path=Path(sys.argv[2]), description="x" * (i % 500)))
    if i % 3 == 0:
        reg.remove(f"w{(i * 7) % 50}")
    i += 1
"""


def test_sigkill_during_registry_writes_and_hoshikage_add(tmp_path, good_models):
    home = tmp_path / "home"
    write_registry(home, good_models)
    base = set(json.loads((home / "model_map.json").read_text()))
    rng = random.Random(6)
    env = {**os.environ, "HOSHIKAGE_HOME": str(home)}
    # A writer doing hundreds of locked, atomic writes a second, killed at random moments.
    for _ in range(12 if LONG else 5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(good_models["dream"])],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _registry_ok(home, base)
    # `hoshikage add` killed at random points of its run.
    for i in range(8 if LONG else 3):
        proc = subprocess.Popen([sys.executable, "-m", "hoshikage", "add", str(good_models["smollm2"]), f"cli{i}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _registry_ok(home, base)
    # The next write succeeds and clears the temporaries the killed writers left.
    done = subprocess.run([sys.executable, "-m", "hoshikage", "add", str(good_models["smollm2"]), "after"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "after" in _registry_ok(home, base)
    assert not list(home.glob(".model_map.*.tmp"))


@pytest.mark.long
def test_sigkill_of_the_server_during_admin_writes(tmp_path, good_models):
    server = start(tmp_path, good_models, {})
    base = set(json.loads((server.home / "model_map.json").read_text()))
    stop = threading.Event()
    sent = [0]

    def writer():
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                i = sent[0]
                try:
                    if i % 3 == 2:
                        client.delete(f"{server.url}/admin/models/a{i - 1}")
                    else:
                        client.post(f"{server.url}/admin/models",
                                    json={"name": f"a{i}", "path": str(good_models["dream"]), "test_model": True})
                except httpx.HTTPError:
                    pass
                sent[0] += 1

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(15)
    assert sent[0] > 10
    _registry_ok(server.home, base)
    server.port = __import__("conftest").free_port()
    server.start()  # the same home: the registry reads back, the models are served
    try:
        assert ask(server, "smollm2").status_code == 200
        assert base <= {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    finally:
        server.stop()
