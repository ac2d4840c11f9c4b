"""Memory: the diffusion request estimate, context buckets, and the process's own RSS.

For a diffusion model llama.cpp computes logits for every canvas position (``encode()``
ignores the batch's output flags), so one request costs, besides the weights:

- the logits output buffer, ``canvas x n_vocab`` float32;
- the compute buffer, sized for ``n_ubatch`` (the bucket): the graph's own logits tensor,
  the attention scores ``n_head x bucket x bucket`` and one layer's activations;
- the numpy sampler's working set: a few ``[CHUNK_ROWS, n_vocab]`` temporaries (it samples the
  masked rows in chunks), whatever the canvas;
- with CFG, the conditional and unconditional rows of the positions still masked (the current
  block under the block schedule, the rest of the answer under the timestep schedule): two
  ``[rows, n_vocab]`` copies, never a second full-canvas logits buffer;
- with the prefix cache (``diffusion_cache=prefix``), the twin's context, made for the request
  and freed after it: its F16 KV cache, ``2 x n_layer x n_ctx x n_head_kv x head_dim`` x 2 bytes
  (n_ctx rounded up to 256), and its own logits and compute buffers (as above). The twin's weights are
  a second mmap'd file (page cache), like the model's own weights not counted here.

The estimate errs high on purpose; it decides whether a request is refused up front.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

from ..sampling.diffusion import CHUNK_ROWS

MIN_BUCKET = 64
SAMPLER_TEMPORARIES = 6  # [CHUNK_ROWS, n_vocab] 4-byte arrays alive at once (rows, candidates, sort keys)
MiB = 2**20


def bucket(tokens: int, limit: int) -> int:
    """The context size for ``tokens``: the next power of two (at least 64), at most ``limit``."""
    size = MIN_BUCKET
    while size < tokens:
        size *= 2
    return min(size, limit)


@dataclass(frozen=True)
class DiffusionEstimate:
    logits_bytes: int
    compute_bytes: int
    sampler_bytes: int
    cfg_bytes: int
    cache_bytes: int = 0  # the prefix cache's twin context: KV cache, logits, compute

    @property
    def total_bytes(self) -> int:
        return self.logits_bytes + self.compute_bytes + self.sampler_bytes + self.cfg_bytes + self.cache_bytes

    @property
    def total_mb(self) -> float:
        return self.total_bytes / MiB

    def describe(self) -> str:
        parts = [f"logits {self.logits_bytes / MiB:.0f} MiB", f"compute {self.compute_bytes / MiB:.0f} MiB",
                 f"sampler {self.sampler_bytes / MiB:.0f} MiB"]
        if self.cfg_bytes:
            parts.append(f"CFG rows {self.cfg_bytes / MiB:.0f} MiB")
        if self.cache_bytes:
            parts.append(f"prefix cache {self.cache_bytes / MiB:.0f} MiB")
        return f"{self.total_mb:.0f} MiB (" + ", ".join(parts) + ")"


def estimate_diffusion(*, canvas: int, n_ubatch: int, n_prompt: int, n_vocab: int, n_embd: int, n_head: int,
                       n_ff: int, block_length: int | None, cfg: bool,
                       kv_cache: tuple[int, int, int] | None = None) -> DiffusionEstimate:
    """Bytes one diffusion request needs beyond the weights (see the module docstring).
    ``kv_cache``: (n_layer, n_head_kv, head_dim) with the prefix cache, else None."""
    f32 = 4
    logits = canvas * n_vocab * f32
    attention = n_head * n_ubatch * n_ubatch * f32
    activations = n_ubatch * (2 * n_ff + 6 * n_embd) * f32
    compute = n_ubatch * n_vocab * f32 + attention + activations
    answer = max(1, canvas - n_prompt)
    sampler = SAMPLER_TEMPORARIES * min(answer, CHUNK_ROWS) * n_vocab * f32 + canvas * 64
    masked_rows = min(answer, block_length) if block_length else answer
    cfg_rows = 2 * masked_rows * n_vocab * f32 if cfg else 0
    cache = 0
    if kv_cache is not None:
        n_layer, n_head_kv, head_dim = kv_cache
        n_kv = -(-canvas // 256) * 256
        kv = 2 * n_layer * n_kv * n_head_kv * head_dim * 2  # K and V, F16
        logits_twice = 2 * canvas * n_vocab * f32  # the twin's output buffer and its graph's logits
        twin_compute = n_head * canvas * n_kv * f32 + canvas * (2 * n_ff + 6 * n_embd) * f32
        cache = kv + logits_twice + twin_compute
    return DiffusionEstimate(logits, compute, sampler, cfg_rows, cache)


def process_memory() -> dict[str, float]:
    """This process's resident memory now and at its peak, in MiB (Linux; empty elsewhere)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def release_free_memory() -> None:
    """Ask glibc to hand freed heap pages back to the OS (no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
