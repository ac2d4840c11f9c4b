"""Which model is in memory, its contexts, and its RAM-disk copy: "quiet intelligence" (静かなる
知性, the design idea since 1.0), resources only while needed. ``IDLE_TIMEOUT`` unloads the
model; ``GREAT_TIMEOUT``, the longer ("great") timer, also deletes its RAM-disk copy: until then
an unloaded model reloads from RAM.

- A model is loaded on its first request; asking for another model unloads the first.
- After ``IDLE_TIMEOUT`` seconds without requests the model and its contexts are freed.
- With ``RAMDISK_PATH`` set (Linux), the GGUF is copied there first (temp file + rename) and
  loaded from the copy; copies are deleted after ``GREAT_TIMEOUT`` seconds of complete
  inactivity, and at shutdown. A copy is tracked (and listed in ``status()``) from the moment
  it exists until its file is gone: an empty ``ramdisk_copies`` means nothing is left. The
  folder ``RAMDISK_PATH/hoshikage`` must be private: created 0700, or an existing real
  directory owned by this user that no one else can write to (otherwise the RAM disk is not
  used, and the log says why). Copies are 0600, written to an unpredictable temporary name
  opened with O_EXCL, then renamed.
- Making a model ready (pre-check, child-process probe, RAM-disk copy, load) has one deadline,
  ``LOAD_TIMEOUT``. A file refused by the pre-check or the probe is remembered by (path, size,
  mtime, inode), so later requests for it are answered without reading it again.
- Contexts are sized in power-of-two buckets (``memory.bucket``): one for autoregressive
  prompts + answers, one ``n_ubatch = n_batch = bucket`` context per diffusion canvas size.
  A context is reused while it is large enough; a larger request replaces it.

Every method that touches the native library runs on the worker thread; ``status()`` may be
called from anywhere.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .. import Context, Model
from ..embeddings import embedding_context
from ..errors import ModelLoadError
from ..gguf_file import open_regular_file
from .memory import bucket, process_memory, release_free_memory
from .placement import load_options
from .probe import file_signature, probe_model
from .registry import ModelEntry, Registry
from .settings import Settings

log = logging.getLogger("hoshikage.server")

RAMDISK_FOLDER = "hoshikage"
RAMDISK_HEADROOM = 256 * 2**20  # leave this much free on the RAM disk after a copy
COPY_CHUNK = 64 * 2**20  # bytes copied between two looks at the load deadline
MAX_REFUSED = 256  # refused file signatures remembered


class Residency:
    def __init__(self, settings: Settings, clock=time.monotonic):
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()  # guards the attributes status() reads
        self.entry: ModelEntry | None = None
        self.model: Model | None = None
        self.loaded_from: Path | None = None
        self.loaded_at = 0.0
        self.kind: str | None = None  # of the loaded model
        self.model_mb: float | None = None
        self.last_used = clock()
        self.last_activity = clock()
        self._context: Context | None = None
        self._context_kind: str | None = None
        self._context_info: dict[str, Any] | None = None  # plain numbers, for status()
        self._copies: dict[Path, Path] = {}  # RAM-disk copy -> original (changed under _lock)
        self._undeletable: set[Path] = set()  # copies whose deletion failed (warned once; retried)
        self._probed: set[tuple] = set()  # file signatures that loaded in a child process
        self._refused: OrderedDict[tuple, str] = OrderedDict()  # signature -> why the pre-check/probe refused it
        self._ramdisk_warned: str | None = None
        self.loads = 0
        self.unloads = 0
        self._adopt_existing_copies()

    # -- loading ---------------------------------------------------------------------------

    def acquire(self, entry: ModelEntry) -> Model:
        """The loaded model for ``entry``, loading it (and unloading another) if needed.

        Raises ModelLoadError (bad file, or LOAD_TIMEOUT passed) or ValueError (bad setting).
        """
        now = self._clock()
        self.last_used = self.last_activity = now
        if self.model is not None and self.entry is not None and self.entry.path == entry.path:
            self.entry = entry  # stop words or defaults may have changed
            return self.model
        limit = self.settings.load_timeout
        deadline = time.monotonic() + limit
        try:
            self._probe(entry.path, deadline)  # a broken file is refused before the loaded model is given up
            if self.model is not None:
                self.unload(f"switching to {entry.name}")
            path = self._ramdisk_copy(entry.path, deadline) or entry.path
            t0 = time.perf_counter()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ModelLoadError("out of time before llama.cpp could start loading it")
            model = Model(path, **load_options(entry, self.settings), load_timeout=left)
        except ModelLoadError as exc:
            if time.monotonic() < deadline:
                raise
            raise ModelLoadError(f"{entry.path} was not ready within LOAD_TIMEOUT={limit:g}s: {exc}") from None
        with self._lock:
            self.entry, self.model, self.loaded_from = entry, model, path
            self.kind = "diffusion" if model.is_diffusion else "autoregressive"
            self.model_mb = round(model.size_bytes / 2**20, 1)
            self.loaded_at = self._clock()
            self.loads += 1
        log.info("loaded %s (%s, %s, %.0f MiB) from %s in %.2fs", entry.name, model.arch, self.kind,
                 self.model_mb, path, time.perf_counter() - t0)
        return model

    def _probe(self, path: Path, deadline: float) -> None:
        """With PROBE_MODELS, load a file not seen before in a child process first (see probe.py).

        Refusals by the pre-check or the probe (not timeouts) are remembered per file signature.
        """
        if not self.settings.probe_models:
            return
        from ..gguf_check import check_gguf_structure
        from ..gguf_check import check_gguf_file

        check_gguf_file(path)  # missing, a directory, a FIFO, not GGUF: say so without a child process
        signature = file_signature(path)
        if signature in self._probed:
            return
        if signature in self._refused:
            raise ModelLoadError(self._refused[signature])
        t0 = time.perf_counter()
        try:
            check_gguf_structure(path)  # what is known to be broken fails here, without a child process
            probe_model(path, timeout=max(1.0, deadline - time.monotonic()))
        except ModelLoadError as exc:
            # Not a timeout, a missing native library or an unreadable file (permissions may change).
            if getattr(exc, "about_the_file", True) and not isinstance(exc.__cause__, OSError):
                self._remember_refusal(signature, str(exc))
            raise
        self._probed.add(signature)
        log.info("probed %s in a child process in %.2fs", path, time.perf_counter() - t0)

    def _remember_refusal(self, signature: tuple, message: str) -> None:
        self._refused[signature] = message
        while len(self._refused) > MAX_REFUSED:
            self._refused.popitem(last=False)

    def max_tokens_in_context(self) -> int:
        """Largest context/canvas for the loaded model: N_CTX, bounded by its training length."""
        assert self.model is not None
        train = self.model.n_ctx_train or self.settings.n_ctx or 4096
        return min(self.settings.n_ctx, train) if self.settings.n_ctx else train

    def context(self, kind: str, tokens: int) -> Context:
        """A context holding ``tokens`` (prompt + answer, the diffusion canvas, or the longest
        embeddings input), reused if possible. ``kind``: autoregressive, diffusion or embedding."""
        assert self.model is not None
        limit = self.max_tokens_in_context()
        ctx = self._context
        if ctx is not None and self._context_kind == kind:
            have = ctx.n_ubatch if kind in ("diffusion", "embedding") else ctx.n_ctx
            if have >= min(tokens, limit):
                return ctx
        self._free_context()
        size = bucket(tokens, limit)
        threads = self.settings.n_threads or None
        if kind == "diffusion":
            ctx = Context(self.model, n_ctx=size, n_batch=size, n_ubatch=size, n_threads=threads)
        elif kind == "embedding":  # each input in one ubatch (hoshikage/embeddings.py)
            ctx = embedding_context(self.model, size, n_threads=threads)
        else:
            ctx = Context(self.model, n_ctx=size, n_threads=threads)
        with self._lock:
            self._context, self._context_kind = ctx, kind
            self._context_info = {"kind": kind, "n_ctx": ctx.n_ctx, "n_ubatch": ctx.n_ubatch}
        log.debug("new %s context of %d tokens for %s", kind, size, self.entry.name if self.entry else "?")
        return ctx

    def touch(self) -> None:
        self.last_used = self.last_activity = self._clock()

    # -- unloading -------------------------------------------------------------------------

    def _free_context(self) -> None:
        with self._lock:
            ctx, self._context, self._context_kind = self._context, None, None
            self._context_info = None
        if ctx is not None:
            ctx.close()

    def unload(self, reason: str) -> None:
        """Free the contexts, then the model (a context keeps its model alive)."""
        if self.model is None:
            return
        self._free_context()
        with self._lock:
            model, entry = self.model, self.entry
            self.model = self.entry = self.loaded_from = self.kind = self.model_mb = None
            self.unloads += 1
        model.close()
        release_free_memory()
        log.info("unloaded %s (%s)", entry.name if entry else "?", reason)

    def tick(self, registry: Registry | None = None) -> None:
        """Idle unload, RAM-disk expiry, and unloading a model that left the registry."""
        now = self._clock()
        idle = self.settings.idle_timeout
        if self.model is not None and idle > 0 and now - self.last_used >= idle:
            self.unload(f"idle for {now - self.last_used:.0f}s (IDLE_TIMEOUT={idle:g})")
        if self.model is not None and registry is not None and self.entry is not None:
            current = registry.get(self.entry.name)
            if current is None or current.path != self.entry.path:
                self.unload(f"{self.entry.name} was removed from the registry or changed path")
        great = self.settings.great_timeout
        if self._copies and great > 0 and now - self.last_activity >= great:
            if self.model is not None:
                self.unload(f"inactive for {now - self.last_activity:.0f}s (GREAT_TIMEOUT={great:g})")
            self.remove_copies(f"inactive for {now - self.last_activity:.0f}s (GREAT_TIMEOUT={great:g})")

    def shutdown(self) -> None:
        self.unload("shutdown")
        self.remove_copies("shutdown")

    # -- RAM disk --------------------------------------------------------------------------

    def _ramdisk_dir(self) -> Path | None:
        """``RAMDISK_PATH/hoshikage`` if it is (or could be made) private to this user, else None."""
        root = self.settings.ramdisk_path
        if root is None or not sys.platform.startswith("linux") or not root.is_dir():
            return None
        folder = root / RAMDISK_FOLDER
        problem = private_folder(folder)
        if problem is not None:
            if problem != self._ramdisk_warned:
                log.warning("not using the RAM disk: %s %s; loading models from their own files. Remove it "
                            "(or set RAMDISK_PATH to a folder of your own)", folder, problem)
                self._ramdisk_warned = problem
            return None
        self._ramdisk_warned = None
        return folder

    def _adopt_existing_copies(self) -> None:
        """Copies left by a previous run are tracked (and expire); half-written ones are deleted.
        Only regular files of this user are touched."""
        folder = self._ramdisk_dir()
        if folder is None:
            return
        for p in folder.iterdir():
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
            elif p.suffix == ".gguf":
                if st.st_mode & 0o077:
                    os.chmod(p, 0o600)  # copies of an older version were 0644
                self._track(p, p)

    def _ramdisk_copy(self, original: Path, deadline: float) -> Path | None:
        folder = self._ramdisk_dir()
        if folder is None:
            return None
        try:
            src = original.resolve()
            if folder.resolve() in src.parents:
                return None
            st = src.stat()
            digest = hashlib.sha1(str(src).encode()).hexdigest()[:12]
            dest = folder / f"{digest}-{src.name}"
            if _usable_copy(dest, st):
                self._track(dest, original)
                return dest
            if shutil.disk_usage(folder).free < st.st_size + RAMDISK_HEADROOM:
                log.warning("not copying %s to the RAM disk %s: not enough free space", src.name, folder)
                return None
            t0 = time.perf_counter()
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{digest}-", suffix=".tmp")  # O_EXCL, 0600
            try:
                _copy_into(src, fd, deadline)
                os.replace(tmp, dest)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except TimeoutError:
            raise ModelLoadError(f"copying {original} to the RAM disk did not finish in time") from None
        except OSError as exc:
            log.warning("RAM-disk copy of %s failed, loading the original: %s", original, exc)
            return None
        self._track(dest, original)
        log.info("copied %s to the RAM disk (%s) in %.2fs", src.name, dest, time.perf_counter() - t0)
        return dest

    def _track(self, copy: Path, original: Path) -> None:
        """Keyed by the copy, so a second copy for the same original (its symlink now points to
        another file) never hides the first."""
        with self._lock:
            self._copies[copy] = original

    def remove_copies(self, reason: str) -> None:
        """Delete every tracked copy. Each stays tracked (and in ``status()``) until its file is
        gone, so an empty list there means nothing is left; one that cannot be deleted stays
        tracked and is tried again at the next expiry and at shutdown."""
        deleted = 0
        for copy in list(self._copies):
            try:
                copy.unlink(missing_ok=True)
            except OSError as exc:
                if copy not in self._undeletable:
                    log.warning("could not delete the RAM-disk copy %s: %s", copy, exc)
                    self._undeletable.add(copy)
                continue
            self._undeletable.discard(copy)
            with self._lock:
                self._copies.pop(copy, None)
            deleted += 1
        if deleted:
            log.info("deleted %d RAM-disk cop%s (%s)", deleted, "y" if deleted == 1 else "ies", reason)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            model, entry = self.model, self.entry
            out: dict[str, Any] = {
                "loaded_model": entry.name if entry else None,
                "kind": self.kind,
                "loaded_from": str(self.loaded_from) if self.loaded_from else None,
                "model_mb": self.model_mb,
                "loaded_for_s": round(now - self.loaded_at, 1) if model is not None else None,
                "idle_for_s": round(now - self.last_used, 1),
                "context": self._context_info,
                "ramdisk_copies": sorted(str(p) for p in self._copies),
                "loads": self.loads, "unloads": self.unloads,
            }
        out["memory"] = process_memory()
        return out


# -- RAM-disk helpers -------------------------------------------------------------------------

def private_folder(folder: Path) -> str | None:
    """Make ``folder`` (mode 0700) or check the one there; None if usable, else what is wrong.

    Usable: a real directory (not a symlink) owned by this user that no one else can write to;
    group and other permissions are then removed (an older version created it 0755).
    """
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot be created ({exc.strerror})"
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"belongs to another user (uid {st.st_uid}, not {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"can be written by other users (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return None


def _usable_copy(dest: Path, src: os.stat_result) -> bool:
    """An earlier copy: a regular file of ours (not a link), 0600, as large as and newer than the original."""
    try:
        st = os.lstat(dest)
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
            and st.st_size == src.st_size and st.st_mtime >= src.st_mtime)


def _copy_into(src: Path, fd: int, deadline: float) -> None:
    """Copy ``src`` into the open file ``fd`` (closed here), raising TimeoutError past ``deadline``."""
    with os.fdopen(fd, "wb") as out, os.fdopen(open_regular_file(src), "rb") as inp:
        size, offset = os.fstat(inp.fileno()).st_size, 0
        while offset < size:
            sent = os.sendfile(out.fileno(), inp.fileno(), offset, min(COPY_CHUNK, size - offset))
            if sent == 0:
                raise OSError(f"{src} shrank while it was copied")
            offset += sent
            if time.monotonic() > deadline:
                raise TimeoutError
