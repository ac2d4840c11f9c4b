"""The residency's bookkeeping of RAM-disk copies, without a live server or the native library.

``status()["ramdisk_copies"]`` is read from the event loop while the worker thread deletes the
copies: an empty list must mean that no copy is left on the RAM disk (test_server_quiet's
GREAT_TIMEOUT test relies on it), and every copy the server made is deleted at expiry.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from hoshikage.server import residency as residency_mod
from hoshikage.server.settings import Settings


@pytest.fixture
def setup(tmp_path):
    now = [1000.0]
    ramdisk = tmp_path / "shm"
    ramdisk.mkdir()
    settings = Settings(_env_file=None, hoshikage_home=tmp_path / "home", ramdisk_path=ramdisk,
                        probe_models=False, idle_timeout=1, great_timeout=5)
    res = residency_mod.Residency(settings, clock=lambda: now[0])
    models = tmp_path / "models"
    models.mkdir()
    return res, ramdisk / residency_mod.RAMDISK_FOLDER, models, now


def model_file(folder: Path, name: str, size: int = 4096) -> Path:
    path = folder / name
    path.write_bytes(b"GGUF" + os.urandom(size))
    return path


def copy(res, original: Path) -> Path:
    dest = res._ramdisk_copy(original, time.monotonic() + 60)
    assert dest is not None and dest.is_file()
    return dest


def on_disk(folder: Path) -> set[str]:
    return {str(p) for p in folder.glob("*.gguf")}


def test_status_lists_every_copy_until_its_file_is_gone(setup, monkeypatch):
    """The worker thread can be preempted between two deletions; whatever status() says at that
    moment must not claim that a copy still on disk is gone."""
    res, folder, models, now = setup
    for name in ("smollm2.gguf", "dream.gguf", "llada.gguf"):
        copy(res, model_file(models, name))
    assert set(res.status()["ramdisk_copies"]) == on_disk(folder) and len(on_disk(folder)) == 3
    seen: list[tuple[set[str], set[str]]] = []
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):  # status() as the event loop would see it, before each deletion
        seen.append((set(res.status()["ramdisk_copies"]), on_disk(folder)))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    now[0] += 5  # GREAT_TIMEOUT
    res.tick()
    monkeypatch.undo()
    assert len(seen) == 3
    for listed, present in seen:
        assert present <= listed, f"status() lists {sorted(listed)} while {sorted(present)} are on disk"
    assert res.status()["ramdisk_copies"] == [] and not on_disk(folder)


def test_a_second_copy_for_the_same_original_does_not_hide_the_first(setup):
    """A registry path that is a symlink, pointed at a new file: both copies are deleted."""
    res, folder, models, now = setup
    v1, v2 = model_file(models, "v1.gguf"), model_file(models, "v2.gguf")
    link = models / "current.gguf"
    link.symlink_to(v1)
    first = copy(res, link)
    link.unlink()
    link.symlink_to(v2)
    second = copy(res, link)
    assert first != second
    assert set(res.status()["ramdisk_copies"]) == {str(first), str(second)} == on_disk(folder)
    now[0] += 5
    res.tick()
    assert res.status()["ramdisk_copies"] == [] and not on_disk(folder)


def test_a_copy_that_cannot_be_deleted_stays_tracked_and_is_retried(setup, monkeypatch, caplog):
    res, folder, models, now = setup
    stuck = copy(res, model_file(models, "a.gguf"))
    other = copy(res, model_file(models, "b.gguf"))
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self == stuck:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    caplog.set_level(logging.INFO, logger="hoshikage.server")
    now[0] += 5
    res.tick()
    res.tick()
    assert res.status()["ramdisk_copies"] == [str(stuck)] and on_disk(folder) == {str(stuck)}
    assert not other.exists()
    assert caplog.text.count("could not delete the RAM-disk copy") == 1  # warned once, not every tick
    monkeypatch.undo()
    res.shutdown()
    assert res.status()["ramdisk_copies"] == [] and not on_disk(folder)
