"""The model registry: ``$HOSHIKAGE_HOME/model_map.json`` plus GGUF files found in ``models/``.

File format (a JSON object, one entry per model name)::

    {"smollm2": {"path": "/abs/SmolLM2.gguf", "stop": ["<|im_end|>"]},
     "test-llada-tiny": {"path": "/abs/llada-tiny.gguf", "stop": [], "test_model": true,
                         "description": "TEST MODEL: random weights", "max_tokens": 64,
                         "diffusion": {"schedule": 1, "block_length": 32, "steps": 32}}}

Hoshikage 1.0's ``{"path": "<folder>", "model": "<file>.gguf"}`` entries are read as well.
``*.gguf`` files in ``models/`` are served under their file name without ``.gguf`` unless a
registered entry already uses that name or that file.

Every change is read-modify-write under an exclusive ``flock`` on ``model_map.json.lock``, and
written to a temporary file in the same folder, fsynced, then renamed over the old one: a CLI
edit racing the server, or a crash mid-write, never loses or corrupts entries. Readers notice
changes by the file's (mtime, size, inode) and re-read it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .gguf_header import guess_kind

log = logging.getLogger("hoshikage.server")


class RegistryError(Exception):
    """The registry file cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    stop: tuple[str, ...] = ()
    description: str | None = None
    test_model: bool = False
    diffusion: dict[str, Any] = field(default_factory=dict)  # per-model DiffusionParams defaults
    max_tokens: int | None = None  # per-model default answer length (diffusion: the canvas after the prompt)
    source: str = "registry"  # or "models_dir"

    def kind_hint(self) -> str | None:
        """"diffusion" / "autoregressive" from the GGUF header, None if unreadable."""
        return guess_kind(self.path)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "stop": list(self.stop)}
        if self.description:
            out["description"] = self.description
        if self.test_model:
            out["test_model"] = True
        if self.diffusion:
            out["diffusion"] = dict(self.diffusion)
        if self.max_tokens:
            out["max_tokens"] = self.max_tokens
        return out


def _entry_from_json(name: str, raw: Any, base: Path) -> ModelEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise RegistryError(f"entry {name!r} needs a 'path' string")
    path = Path(raw["path"]).expanduser()
    if isinstance(raw.get("model"), str):  # Hoshikage 1.0: folder + file name
        path = path / raw["model"]
    if not path.is_absolute():
        path = base / path
    stop = raw.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise RegistryError(f"entry {name!r}: 'stop' must be a list of strings")
    diffusion = raw.get("diffusion") or {}
    if not isinstance(diffusion, dict):
        raise RegistryError(f"entry {name!r}: 'diffusion' must be an object")
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RegistryError(f"entry {name!r}: 'max_tokens' must be a positive integer")
    return ModelEntry(name=name, path=path, stop=tuple(stop), description=raw.get("description"),
                      test_model=bool(raw.get("test_model", False)), diffusion=dict(diffusion),
                      max_tokens=max_tokens)


class Registry:
    """Thread-safe view of the registry; ``entries()`` re-reads the file when it changed."""

    def __init__(self, home: str | os.PathLike):
        self.home = Path(home).expanduser()
        self.path = self.home / "model_map.json"
        self.lock_path = self.home / "model_map.json.lock"
        self.models_dir = self.home / "models"
        self._mutex = threading.Lock()
        self._signature: tuple | None = None
        self._entries: dict[str, ModelEntry] = {}

    # -- reading ---------------------------------------------------------------------------

    def _signature_now(self) -> tuple:
        def sig(p: Path) -> tuple:
            try:
                st = p.stat()
                return (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                return ()

        return (sig(self.path), sig(self.models_dir))

    def _read_raw(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            raw = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.path} is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise RegistryError(f"{self.path} must hold a JSON object of model entries")
        return raw

    def _discover(self, registered: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        if not self.models_dir.is_dir():
            return {}
        used_paths = {e.path.resolve() for e in registered.values()}
        found = {}
        for gguf in sorted(self.models_dir.glob("*.gguf")):
            name = gguf.stem
            if name in registered or gguf.resolve() in used_paths:
                continue
            found[name] = ModelEntry(name=name, path=gguf, source="models_dir")
        return found

    def entries(self) -> dict[str, ModelEntry]:
        """Every model by name. A broken file keeps the last good snapshot (and is logged)."""
        with self._mutex:
            signature = self._signature_now()
            if signature != self._signature:
                try:
                    raw = self._read_raw()
                    registered = {name: _entry_from_json(name, value, self.home) for name, value in raw.items()}
                except RegistryError as exc:
                    log.error("registry not reloaded, keeping the previous entries: %s", exc)
                    return dict(self._entries)
                self._entries = {**registered, **self._discover(registered)}
                self._signature = signature
            return dict(self._entries)

    def get(self, name: str) -> ModelEntry | None:
        return self.entries().get(name)

    def reload(self) -> dict[str, ModelEntry]:
        with self._mutex:
            self._signature = None
        return self.entries()

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the file lock; yield the current raw entries; write them back atomically."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._remove_stale_temporaries()
                raw = self._read_raw()
                before = json.dumps(raw, sort_keys=True)
                yield raw
                if json.dumps(raw, sort_keys=True) != before:
                    self._write_atomic(raw)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a writer that was killed mid-write (e.g. SIGKILL). Called under the
        lock, so no other writer is mid-write."""
        for stale in self.home.glob(".model_map.*.tmp"):
            with _suppress_os_error():
                stale.unlink()

    def _write_atomic(self, raw: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".model_map.", suffix=".tmp", dir=self.home)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(raw, f, ensure_ascii=False, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with _suppress_os_error():
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.home, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def add(self, entry: ModelEntry) -> bool:
        """Register (or replace) ``entry``; True if it replaced an existing entry."""
        with self._locked() as raw:
            replaced = entry.name in raw
            raw[entry.name] = entry.to_json()
        return replaced

    def remove(self, name: str) -> bool:
        """Unregister ``name``; False if the file has no such entry."""
        with self._locked() as raw:
            if name not in raw:
                return False
            del raw[name]
        return True


@contextmanager
def _suppress_os_error() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass
