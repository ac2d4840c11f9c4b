"""Structural check of a GGUF file before llama.cpp sees it.

llama.cpp rejects most malformed files with an error, but it aborts the whole process
(``GGML_ASSERT``) on a few values it only asserts, and it is the host process that dies. This
reads the header and the tensor table with bounds checks and refuses, with a message naming
the problem, what llama.cpp would crash on or what plainly cannot work:

- counts, string lengths, array lengths and value types that do not fit the file;
- tensor tables whose dimensions, types, data offsets or sizes are impossible or run past
  the end of the file (a truncated or lying file);
- the hyper-parameters llama.cpp only asserts: ``<arch>.block_count`` (1..512), expert
  counts, ``<arch>.rope.scaling.type``; a vocabulary listing the same token text twice;
- a model without a vocabulary (``tokenizer.ggml.model`` "no_vocab" / "none"): it loads, but
  llama.cpp aborts on the first tokenization. (What depends on llama.cpp's resolved special
  tokens is checked after the load, by ``Model``.)

It reads only the header (one pass; a large vocabulary takes a fraction of a second) and
never the tensor data. What it accepts may still fail to load; llama.cpp then says why.
``check_gguf_file`` is the cheap first look (a readable regular file with the GGUF magic).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from .errors import ModelLoadError
from .gguf_file import GGUFFormatError, GGUFHeader, NotRegularFileError, open_regular_file, read_header

GGUF_MAGIC = b"GGUF"

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS (llama-hparams.h)
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
_INT64_MAX = 2**63 - 1


NO_VOCAB_MODELS = ("no_vocab", "none")  # llama-vocab.cpp: LLAMA_VOCAB_TYPE_NONE


class _Bad(GGUFFormatError):
    pass


class _Unusable(_Bad):
    """Well-formed, but not a model Hoshikage can run."""


def check_gguf_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it looks like a GGUF file, else raise ModelLoadError saying why.

    Only regular files are opened (a FIFO would block, a device never end), without blocking,
    and the message never shows the file's bytes.
    """
    try:
        p = Path(path).expanduser()
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ModelLoadError(f"model file not found: {p}") from None
    except PermissionError as exc:
        raise ModelLoadError(f"model file is not readable: {p} ({exc.strerror})") from exc
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a loop of links, ...
        raise ModelLoadError(f"unusable model path {str(path)[:200]!r}: {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ModelLoadError(f"model path is a directory, not a GGUF file: {p}")
    try:
        with os.fdopen(open_regular_file(p), "rb") as f:
            magic = f.read(4)
    except NotRegularFileError as exc:
        raise ModelLoadError(f"model path is {exc.strerror}: {p}") from None
    except OSError as exc:
        raise ModelLoadError(f"model file is not readable: {p} ({exc.strerror})") from exc
    if len(magic) < 4:
        raise ModelLoadError(f"model file is empty or truncated ({st.st_size} bytes): {p}")
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"not a GGUF file (it does not start with the GGUF magic bytes): {p}")
    return p


def _quant_sizes() -> dict[int, tuple[int, int]]:
    """ggml type -> (block size, bytes per block), from the gguf package."""
    from gguf.constants import GGML_QUANT_SIZES  # noqa: PLC0415 - only when a file is checked

    return {int(t): (int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}


def check_gguf_structure(path: str | os.PathLike) -> dict[str, object]:
    """Raise ModelLoadError naming what is wrong with ``path``'s header or tensor table.

    Returns the scalar metadata (strings and numbers; arrays are skipped) on success.
    """
    p = Path(path)
    try:
        header = read_header(p, arrays=False, hash_tokens=True)
        return _check(header)
    except _Unusable as exc:
        raise ModelLoadError(f"unusable model file {p}: {exc}") from None
    except GGUFFormatError as exc:
        raise ModelLoadError(f"corrupt GGUF file {p}: {exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"model file is not readable: {p} ({exc.strerror or exc})") from exc


def _check(header: GGUFHeader) -> dict[str, object]:
    """The tensor table against the file, the asserted hyper-parameters, a unique vocabulary."""
    sizes = _quant_sizes()
    for t in header.tensors.values():
        count = 1
        for d in t.shape:
            if d > _INT64_MAX:
                raise _Bad(f"tensor {t.name!r} has an impossible dimension {d}")
            count *= d
            if count > _INT64_MAX:
                raise _Bad(f"tensor {t.name!r}: its element count overflows ({list(t.shape)})")
        if t.ggml_type not in sizes:
            raise _Bad(f"tensor {t.name!r} has unknown ggml type {t.ggml_type}")
        block, type_size = sizes[t.ggml_type]
        if t.shape[0] % block:
            raise _Bad(f"tensor {t.name!r}: first dimension {t.shape[0]} is not a multiple of its block size {block}")
        end = t.offset + count // block * type_size
        if end > header.size:
            raise _Bad(f"tensor {t.name!r} needs bytes {t.offset}..{end} but the file has {header.size} "
                       "(truncated, or the tensor's size in the header is wrong)")
    meta = {k: v for k, v in header.kv.items() if v is not None}
    _check_hparams(meta, set(header.kv))
    tokenizer = meta.get("tokenizer.ggml.model")
    if tokenizer in NO_VOCAB_MODELS:
        raise _Unusable(f"tokenizer.ggml.model is {tokenizer!r}: the model has no vocabulary, so text cannot be "
                        "tokenized (llama.cpp would abort on the first tokenization)")
    hashes = header.token_hashes  # llama.cpp asserts every token text is unique
    if hashes is not None and np.unique(hashes).size != hashes.size:
        seen: set[bytes] = set()
        for text in header.token_bytes():  # exact comparison, after a hash collision was seen
            if text in seen:
                raise _Bad(f"the vocabulary (tokenizer.ggml.tokens) lists {text.decode('utf-8', 'replace')!r} twice")
            seen.add(text)
    return meta


def _check_hparams(meta: dict[str, object], present: set[str]) -> None:
    """The hyper-parameters llama.cpp asserts on (an abort) rather than rejecting."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return  # llama.cpp refuses a file without an architecture with an error

    def num(key: str) -> int | None:
        v = meta.get(f"{arch}.{key}")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    layers = num("block_count")
    if layers is not None and not 1 <= layers <= MAX_LAYERS:
        raise _Bad(f"{arch}.block_count is {layers}; llama.cpp supports 1 to {MAX_LAYERS} layers")
    nextn = num("nextn_predict_layers")
    if layers is not None and nextn is not None and nextn > layers:
        raise _Bad(f"{arch}.nextn_predict_layers ({nextn}) exceeds block_count ({layers})")
    experts, used = num("expert_count") or 0, num("expert_used_count")
    if experts > MAX_EXPERTS:
        raise _Bad(f"{arch}.expert_count is {experts}; llama.cpp supports at most {MAX_EXPERTS}")
    if used is None and f"{arch}.expert_used_count" in present:
        used = None  # an array per layer: llama.cpp checks it
    elif (used or 0) > experts or (experts > 0 and not used):
        raise _Bad(f"{arch}.expert_used_count ({used}) must be between 1 and expert_count ({experts})"
                   if experts else f"{arch}.expert_used_count is {used} but the model has no experts")
    groups = num("expert_group_count") or 0
    if groups and (experts == 0 or groups >= experts):
        raise _Bad(f"{arch}.expert_group_count ({groups}) must be below expert_count ({experts})")
    rope = meta.get(f"{arch}.rope.scaling.type")
    if rope is not None and rope not in ROPE_SCALING_TYPES:
        raise _Bad(f"{arch}.rope.scaling.type is {rope!r}; llama.cpp knows {', '.join(ROPE_SCALING_TYPES)}")
