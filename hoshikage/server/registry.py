"""The model registry: ``$HOSHIKAGE_HOME/model_map.json`` plus GGUF files found in ``models/``.

File format (a JSON object, one entry per model name)::

    {"smollm2": {"path": "/abs/SmolLM2.gguf", "stop": ["<|im_end|>"]},
     "test-llada-tiny": {"path": "/abs/llada-tiny.gguf", "stop": [], "test_model": true,
                         "description": "TEST MODEL: random weights", "max_tokens": 64,
                         "diffusion": {"schedule": 1, "block_length": 32, "steps": 32}}}

Hoshikage 1.0's ``{"path": "<folder>", "model": "<file>.gguf"}`` entries are read as well.
``*.gguf`` files in ``models/`` are served under their file name without ``.gguf`` unless a
registered entry already uses that name or that file.

Names follow one rule (``text_rules.model_name_problem``: printable, at most 128 characters, no
surrounding whitespace, no ``/``), and no text may hold a lone surrogate. ``add`` refuses a bad
entry; when reading, an entry that breaks the rules (or lacks a path) is skipped with a warning
naming it, the others are served, and the file keeps it untouched.

Every change is read-modify-write under an exclusive ``flock`` on ``model_map.json.lock``, and
written to a temporary file in the same folder, fsynced, then renamed over the old one: a CLI
edit racing the server, or a crash mid-write, never loses or corrupts entries. Readers notice
changes by the file's (mtime, size, inode) and re-read it.

An entry's kind (``kind_hint``: ``hoshikage list``, ``GET /v1/models``) comes from its GGUF
header without loading it; once loaded, ``Model.is_diffusion`` is the authority. The header is
read by :func:`hoshikage.gguf_file.read_architecture`, only up to ``general.architecture`` (the
first key llama.cpp's converters and the gguf package write), bounded by the file's size, and
remembered by (path, size, mtime, inode): a listing reads each file once, whether it succeeded or
not. FIFOs, devices and sockets are never opened. ``check_model_path`` is the admin API's check of
a path it is asked to register.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..gguf_check import check_gguf_file
from ..gguf_file import file_kind, read_architecture
from .text_rules import model_name_problem, surrogate_problem

log = logging.getLogger("hoshikage.server")

# llama.cpp: llama_model_is_diffusion() is true for these architectures.
DIFFUSION_ARCHS = frozenset({"llada", "llada-moe", "dream", "rnd1"})
_KIND_CACHE_SIZE = 1024
_kinds: OrderedDict[tuple, str | None] = OrderedDict()
_kinds_lock = threading.Lock()


def guess_kind(path: str | os.PathLike) -> str | None:
    """"diffusion", "autoregressive", or None when the header cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    with _kinds_lock:
        if key in _kinds:
            _kinds.move_to_end(key)
            return _kinds[key]
    arch = read_architecture(path)
    kind = None if arch is None else "diffusion" if arch in DIFFUSION_ARCHS else "autoregressive"
    with _kinds_lock:
        _kinds[key] = kind
        while len(_kinds) > _KIND_CACHE_SIZE:
            _kinds.popitem(last=False)
    return kind


def check_model_path(raw: str, allowed: list[Path]) -> Path:
    """The resolved path of a GGUF file that ``POST /admin/models`` may register.

    The order matters: the path is resolved (symlinks, ``..``) and checked against the allowed
    folders *before* anything is opened, so a path outside them gets the same answer whether
    it exists or not, and its bytes are never read. Inside, only a regular file is opened
    (never blocking), and the error names what it is, not what it contains. Raises
    ModelLoadError; blocking file-system work, so call it off the event loop.
    """
    try:
        path = Path(raw).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a loop of links
        raise ModelLoadError(f"unusable model path {raw[:200]!r}: {exc}") from None
    if not any(path == d or d in path.parents for d in allowed):
        raise ModelLoadError(f"{path} is outside the folders models may be registered from "
                             f"({', '.join(map(str, allowed))}; set ADMIN_MODEL_DIRS to change them)")
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelLoadError(f"model file is not readable: {path} ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelLoadError(f"model path is a directory, not a GGUF file: {path}")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"model path is {file_kind(st.st_mode)}, not a regular file: {path}")
    return check_gguf_file(path)  # opens it non-blocking and reads the magic only


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
    # Where its layers go (server/placement.py): RPC servers, split proportions, offloaded layers.
    rpc: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    n_gpu_layers: int | None = None

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
        for key in ("rpc", "tensor_split", "n_gpu_layers"):
            if getattr(self, key) not in ((), None):
                value = getattr(self, key)
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


def entry_problem(entry: ModelEntry) -> str | None:
    """Why ``entry`` cannot be registered (its name, or a lone surrogate in its text), else None."""
    problem = model_name_problem(entry.name)
    if problem is not None:
        return problem
    for what, value in (("path", str(entry.path)), ("stop", list(entry.stop)), ("description", entry.description)):
        problem = surrogate_problem(value)
        if problem is not None:
            return f"entry {entry.name!r}: {what}{problem if problem.startswith('[') else ': ' + problem}"
    return None


def _entry_from_json(name: str, raw: Any, base: Path) -> ModelEntry:
    problem = model_name_problem(name)
    if problem is not None:
        raise RegistryError(problem)
    problem = surrogate_problem(raw)
    if problem is not None:
        raise RegistryError(f"entry {name!r}: {problem}")
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
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise RegistryError(f"entry {name!r}: 'description' must be a string")
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RegistryError(f"entry {name!r}: 'max_tokens' must be a positive integer")
    return ModelEntry(name=name, path=path, stop=tuple(stop), description=description,
                      test_model=bool(raw.get("test_model", False)), diffusion=dict(diffusion),
                      max_tokens=max_tokens, **_placement_from_json(name, raw))


def _placement_from_json(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """An entry's "rpc" (list or comma-separated HOST:PORT), "tensor_split" and "n_gpu_layers"."""
    from ..rpc_endpoints import parse_endpoints, parse_tensor_split

    layers = raw.get("n_gpu_layers")
    if layers is not None and (not isinstance(layers, int) or isinstance(layers, bool) or layers < -1):
        raise RegistryError(f"entry {name!r}: 'n_gpu_layers' must be an integer >= -1")
    try:
        return {"rpc": tuple(parse_endpoints(raw.get("rpc"))), "n_gpu_layers": layers,
                "tensor_split": tuple(parse_tensor_split(raw.get("tensor_split")))}
    except ValueError as exc:
        raise RegistryError(f"entry {name!r}: {exc}") from None


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
        except UnicodeDecodeError as exc:
            raise RegistryError(f"{self.path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        try:
            raw = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.path} is not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise RegistryError(f"{self.path} must hold a JSON object of model entries")
        return raw

    def _valid_entries(self, raw: dict[str, Any]) -> dict[str, ModelEntry]:
        """The entries of the file that can be served; each other one is skipped with a warning."""
        registered = {}
        for name, value in raw.items():
            try:
                registered[name] = _entry_from_json(name, value, self.home)
            except RegistryError as exc:
                log.warning("%s: entry skipped (the file keeps it): %s", self.path, exc)
        return registered

    def _discover(self, registered: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        if not self.models_dir.is_dir():
            return {}
        used_paths = {e.path.resolve() for e in registered.values()}
        found = {}
        for gguf in sorted(self.models_dir.glob("*.gguf")):
            name = gguf.stem
            if name in registered or gguf.resolve() in used_paths:
                continue
            problem = model_name_problem(name) or surrogate_problem(str(gguf))
            if problem is not None:
                log.warning("%s: file not served (rename it): %s", self.models_dir, problem)
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
                except RegistryError as exc:
                    log.error("registry not reloaded, keeping the previous entries: %s", exc)
                    return dict(self._entries)
                registered = self._valid_entries(raw)
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
            with os.fdopen(fd, "wb") as f:
                f.write(_json_bytes(raw))
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
        """Register (or replace) ``entry``; True if it replaced an existing entry. ValueError if the
        entry breaks the rules (see ``entry_problem``)."""
        problem = entry_problem(entry)
        if problem is not None:
            raise ValueError(problem)
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


def _json_bytes(raw: dict[str, Any]) -> bytes:
    """The file's text, readable as written (non-ASCII kept), unless an entry the reader skips holds
    a lone surrogate: then that is written as its JSON escape, so the file stays valid UTF-8."""
    try:
        return (json.dumps(raw, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(raw, ensure_ascii=True, indent=2) + "\n").encode("ascii")


@contextmanager
def _suppress_os_error() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass
