"""Broken GGUF files for the hardening tests, made from a good one.

``layout(path)`` parses a GGUF header and records *where* each field sits, so a mutator can
change one field in place (a tensor's dimension, its type, its data offset, the tensor count,
a metadata value) and leave the rest of the file byte-identical. ``BAD_FILES`` maps a case
name to a function ``(good: Path, out: Path) -> Path`` writing that broken variant.
"""
from __future__ import annotations

import functools
import mmap
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass
class KV:
    key: str
    vtype: int
    value_offset: int  # where the value (or, for strings, its length) starts
    value: object = None


@dataclass
class TensorEntry:
    name: str
    offset: int  # where the name's length starts
    n_dims_offset: int
    dims_offset: int
    n_dims: int
    dims: tuple[int, ...]
    type_offset: int
    ggml_type: int
    data_offset_offset: int
    rel_offset: int


@dataclass
class Layout:
    version: int
    n_tensors: int
    n_kv: int
    kv: dict[str, KV] = field(default_factory=dict)
    tensors: list[TensorEntry] = field(default_factory=list)
    info_end: int = 0  # end of the tensor table


@functools.lru_cache(maxsize=8)
def _layout_cached(path: str, size: int, mtime_ns: int) -> Layout:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse_layout(data)


def layout(path: Path) -> Layout:
    st = Path(path).stat()
    return _layout_cached(str(path), st.st_size, st.st_mtime_ns)


def _parse_layout(data) -> Layout:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    out = Layout(version, n_tensors, n_kv)
    off = 24

    def string(o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", data, o)
        return bytes(data[o + 8:o + 8 + n]).decode("utf-8", "replace"), o + 8 + n

    def skip(t: int, o: int) -> tuple[object, int]:
        if t == _STRING:
            return string(o)
        if t == _ARRAY:
            st, n = struct.unpack_from("<IQ", data, o)
            o += 12
            for _ in range(n):
                _, o = skip(st, o)
            return None, o
        fmt = "<" + _SCALAR[t]
        return struct.unpack_from(fmt, data, o)[0], o + struct.calcsize(fmt)

    for _ in range(n_kv):
        key, off = string(off)
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        value, end = skip(t, off)
        out.kv[key] = KV(key, t, off, value)
        off = end
    for _ in range(n_tensors):
        start = off
        name, off = string(off)
        (n_dims,) = struct.unpack_from("<I", data, off)
        dims = struct.unpack_from(f"<{n_dims}Q", data, off + 4)
        type_off = off + 4 + 8 * n_dims
        ggml_type, rel = struct.unpack_from("<IQ", data, type_off)
        out.tensors.append(TensorEntry(name, start, off, off + 4, n_dims, tuple(dims), type_off, ggml_type,
                                       type_off + 4, rel))
        off = type_off + 12
    out.info_end = off
    return out


def _patch(good: Path, out: Path, edits: list[tuple[int, bytes]]) -> Path:
    shutil.copyfile(good, out)
    with open(out, "r+b") as f:
        for offset, raw in edits:
            f.seek(offset)
            f.write(raw)
    return out


def _prefix(good: Path, out: Path, n: int) -> Path:
    with open(good, "rb") as f:
        out.write_bytes(f.read(n))
    return out


def _biggest_tensor(lay: Layout) -> TensorEntry:
    return max(lay.tensors, key=lambda t: _prod(t.dims))


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def truncated_half(good: Path, out: Path) -> Path:
    return _prefix(good, out, good.stat().st_size // 2)


def truncated_in_header(good: Path, out: Path) -> Path:
    return _prefix(good, out, 100)


def truncated_after_tensor_table(good: Path, out: Path) -> Path:
    return _prefix(good, out, layout(good).info_end + 64)


def magic_only(good: Path, out: Path) -> Path:
    out.write_bytes(b"GGUF")
    return out


def zero_length(good: Path, out: Path) -> Path:
    out.write_bytes(b"")
    return out


def wrong_magic(good: Path, out: Path) -> Path:
    return _patch(good, out, [(0, b"GGML")])


def random_bytes(good: Path, out: Path) -> Path:
    import random

    rng = random.Random(6)
    out.write_bytes(b"GGUF" + bytes(rng.getrandbits(8) for _ in range(4096)))
    return out


def version_unknown(good: Path, out: Path) -> Path:
    return _patch(good, out, [(4, struct.pack("<I", 99))])


def tensor_count_huge(good: Path, out: Path) -> Path:
    return _patch(good, out, [(8, struct.pack("<Q", 2**62))])


def kv_count_huge(good: Path, out: Path) -> Path:
    return _patch(good, out, [(16, struct.pack("<Q", 2**62))])


def tensor_count_short(good: Path, out: Path) -> Path:
    """The header counts one tensor fewer: the last one is missing from the table."""
    lay = layout(good)
    return _patch(good, out, [(8, struct.pack("<Q", lay.n_tensors - 1))])


def key_length_huge(good: Path, out: Path) -> Path:
    return _patch(good, out, [(24, struct.pack("<Q", 2**60))])


def tensor_size_lies_bigger(good: Path, out: Path) -> Path:
    """The biggest tensor claims 4x its rows: its data would run past the end of the file."""
    t = _biggest_tensor(layout(good))
    return _patch(good, out, [(t.dims_offset + 8 * (t.n_dims - 1), struct.pack("<Q", t.dims[-1] * 4))])


def tensor_size_lies_smaller(good: Path, out: Path) -> Path:
    """A tensor claims half its rows: every byte is in the file, but the shape is wrong."""
    t = _biggest_tensor(layout(good))
    return _patch(good, out, [(t.dims_offset + 8 * (t.n_dims - 1), struct.pack("<Q", t.dims[-1] // 2))])


def tensor_dim_overflow(good: Path, out: Path) -> Path:
    t = layout(good).tensors[0]
    return _patch(good, out, [(t.dims_offset, struct.pack("<Q", 2**63 - 1))])


def tensor_dims_too_many(good: Path, out: Path) -> Path:
    t = layout(good).tensors[0]
    return _patch(good, out, [(t.n_dims_offset, struct.pack("<I", 9))])


def tensor_type_unknown(good: Path, out: Path) -> Path:
    t = layout(good).tensors[0]
    return _patch(good, out, [(t.type_offset, struct.pack("<I", 250))])


def tensor_offset_past_end(good: Path, out: Path) -> Path:
    t = layout(good).tensors[-1]
    return _patch(good, out, [(t.data_offset_offset, struct.pack("<Q", good.stat().st_size * 2 // 32 * 32))])


def tensor_offset_misaligned(good: Path, out: Path) -> Path:
    t = layout(good).tensors[-1]
    return _patch(good, out, [(t.data_offset_offset, struct.pack("<Q", t.rel_offset + 1))])


def tensor_renamed(good: Path, out: Path) -> Path:
    """A required tensor is missing: its name no longer matches (same length, so offsets hold)."""
    t = layout(good).tensors[0]
    raw = t.name.encode()
    return _patch(good, out, [(t.offset + 8, b"x" * len(raw))])


def tensor_duplicated_name(good: Path, out: Path) -> Path:
    lay = layout(good)
    seen: dict[int, TensorEntry] = {}
    for t in lay.tensors:
        if len(t.name) in seen:
            return _patch(good, out, [(t.offset + 8, seen[len(t.name)].name.encode())])
        seen[len(t.name)] = t
    raise AssertionError("no two tensor names of the same length")


def arch_unknown(good: Path, out: Path) -> Path:
    kv = layout(good).kv["general.architecture"]
    arch = str(kv.value)
    return _patch(good, out, [(kv.value_offset + 8, b"z" * len(arch))])


def _set_u32(key_suffix: str, value: int) -> Callable[[Path, Path], Path]:
    def mutate(good: Path, out: Path) -> Path:
        lay = layout(good)
        key = next(k for k in lay.kv if k.endswith(key_suffix))
        kv = lay.kv[key]
        fmt = "<" + _SCALAR[kv.vtype]
        return _patch(good, out, [(kv.value_offset, struct.pack(fmt, value))])

    mutate.__name__ = f"{key_suffix}={value}"
    return mutate


def string_length_past_end(good: Path, out: Path) -> Path:
    kv = layout(good).kv["general.architecture"]
    return _patch(good, out, [(kv.value_offset, struct.pack("<Q", 2**40))])


def array_count_huge(good: Path, out: Path) -> Path:
    kv = layout(good).kv["tokenizer.ggml.tokens"]
    return _patch(good, out, [(kv.value_offset + 4, struct.pack("<Q", 2**61))])


def value_type_unknown(good: Path, out: Path) -> Path:
    kv = layout(good).kv["general.architecture"]
    return _patch(good, out, [(kv.value_offset - 4, struct.pack("<I", 77))])


def copy(good: Path, out: Path) -> Path:
    shutil.copyfile(good, out)
    return out


# name -> mutator. Each is applied to a tiny LLaDA test model (and some to SmolLM2).
BAD_FILES: dict[str, Callable[[Path, Path], Path]] = {
    "zero_length": zero_length,
    "magic_only": magic_only,
    "wrong_magic": wrong_magic,
    "random_bytes": random_bytes,
    "version_unknown": version_unknown,
    "truncated_in_header": truncated_in_header,
    "truncated_after_tensor_table": truncated_after_tensor_table,
    "truncated_half": truncated_half,
    "tensor_count_huge": tensor_count_huge,
    "tensor_count_short": tensor_count_short,
    "kv_count_huge": kv_count_huge,
    "key_length_huge": key_length_huge,
    "string_length_past_end": string_length_past_end,
    "array_count_huge": array_count_huge,
    "value_type_unknown": value_type_unknown,
    "tensor_missing": tensor_renamed,
    "tensor_duplicated_name": tensor_duplicated_name,
    "tensor_size_lies_bigger": tensor_size_lies_bigger,
    "tensor_size_lies_smaller": tensor_size_lies_smaller,
    "tensor_dim_overflow": tensor_dim_overflow,
    "tensor_dims_too_many": tensor_dims_too_many,
    "tensor_type_unknown": tensor_type_unknown,
    "tensor_offset_past_end": tensor_offset_past_end,
    "tensor_offset_misaligned": tensor_offset_misaligned,
    "arch_unknown": arch_unknown,
    "head_count_zero": _set_u32(".attention.head_count", 0),
    "head_count_kv_zero": _set_u32(".attention.head_count_kv", 0),
    "embedding_length_zero": _set_u32(".embedding_length", 0),
    "block_count_huge": _set_u32(".block_count", 100_000),
    "block_count_zero": _set_u32(".block_count", 0),
    "context_length_zero": _set_u32(".context_length", 0),
    "feed_forward_length_zero": _set_u32(".feed_forward_length", 0),
    "eos_token_out_of_range": _set_u32("tokenizer.ggml.eos_token_id", 10**9),
    "mask_token_out_of_range": _set_u32("tokenizer.ggml.mask_token_id", 10**9),
    "bos_token_out_of_range": _set_u32("tokenizer.ggml.bos_token_id", 10**9),
}


def _token_strings(good: Path) -> list[tuple[int, bytes]]:
    """(offset of the string's length, its bytes) for every tokenizer.ggml.tokens entry."""
    kv = layout(good).kv["tokenizer.ggml.tokens"]
    with open(good, "rb") as f:
        data = f.read(layout(good).info_end)
    o = kv.value_offset
    _, count = struct.unpack_from("<IQ", data, o)
    o += 12
    out = []
    for _ in range(count):
        (n,) = struct.unpack_from("<Q", data, o)
        out.append((o, data[o + 8:o + 8 + n]))
        o += 8 + n
    return out


def vocab_duplicate_token(good: Path, out: Path) -> Path:
    """Two vocabulary entries with the same text: llama.cpp asserts id_to_token == token_to_id."""
    tokens = _token_strings(good)
    by_len: dict[int, bytes] = {}
    for off, raw in tokens[1000:]:
        if len(raw) in by_len and by_len[len(raw)] != raw:
            return _patch(good, out, [(off + 8, by_len[len(raw)])])
        by_len[len(raw)] = raw
    raise AssertionError("no two tokens of the same length")


def vocab_without_newline(good: Path, out: Path) -> Path:
    """A BPE vocabulary without the newline token ('\\u010a'): llama.cpp asserts it exists."""
    for off, raw in _token_strings(good):
        if raw == "\u010a".encode():
            return _patch(good, out, [(off + 8, "\u01c5".encode())])
    raise AssertionError("no newline token")


BAD_FILES["vocab_duplicate_token"] = vocab_duplicate_token
BAD_FILES["vocab_without_newline"] = vocab_without_newline
