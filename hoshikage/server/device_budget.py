"""Device memory in the diffusion budget: where a request's buffers live, host or device.

llama.cpp keeps the logits output buffer (``[canvas, n_vocab]`` float32) in host memory, and
gives every backend its own compute buffer (llama-context.cpp, one per backend of the
scheduler): a device holding layers needs one layer's attention scores and activations
(server/memory.py), and the device holding the output layer also the graph's logits
(``[n_ubatch, n_vocab]`` float32). With ``n_gpu_layers`` > 0 the output layer is offloaded,
to the last device of the split; the CPU keeps the layers ``n_gpu_layers`` leaves
(llama-model.cpp, ``load_tensors``). So the host part of the estimate loses what the devices
hold, and each device's part is checked against its reported free memory, at most
DEVICE_MEMORY_LIMIT_MB: a canvas that would overflow a device is refused before it is tried,
``memory_budget_exceeded`` naming the device.
"""
from __future__ import annotations

from typing import Any

from .errors import APIError
from .memory import MiB, DiffusionEstimate


def _offloaded(model: Any) -> list[dict[str, Any]]:
    """The model's non-CPU devices holding weights, in split order (model buffers > 0)."""
    from ..devices import model_devices

    return [d for d in model_devices(model) if d["kind"] != "cpu" and d["buffers_mb"].get("model", 0) > 0]


def check_device_memory(model: Any, est: DiffusionEstimate, *, n_ubatch: int, canvas: int, n_layer: int,
                        limit_mb: int) -> float:
    """The host part of ``est`` in MiB; APIError(memory_budget_exceeded) naming the first device
    whose part exceeds its free memory (or ``limit_mb`` when lower; 0 = no cap)."""
    layers = int(model.load_params.get("n_gpu_layers") or 0)
    if layers == 0 or not (model.rpc or _has_gpu(model)):
        return est.total_mb
    devices = _offloaded(model)
    if not devices:
        return est.total_mb
    graph_logits = n_ubatch * model.n_vocab * 4
    layer_compute = max(0, est.compute_bytes - graph_logits)
    cpu_keeps_layers = 0 <= layers < n_layer + 1
    for i, device in enumerate(devices):
        need = layer_compute + (graph_logits if i == len(devices) - 1 else 0)
        usable = device["free_mb"] * MiB
        capped = 0 < limit_mb * MiB < usable
        usable = limit_mb * MiB if capped else usable
        if need > usable:
            where = device.get("endpoint") or device["description"]
            raise APIError("memory_budget_exceeded",
                           f"this diffusion request needs an estimated {need / MiB:.0f} MiB of compute buffers "
                           f"on device {device['name']} ({where}) for a canvas of {canvas} tokens, but it has "
                           f"{usable / MiB:.0f} MiB " + (f"usable (DEVICE_MEMORY_LIMIT_MB={limit_mb})" if capped
                                                         else "free") + "; lower max_tokens", param="max_tokens")
    host = est.total_bytes - est.compute_bytes + (layer_compute if cpu_keeps_layers else 0)
    return host / MiB


def _has_gpu(model: Any) -> bool:
    from ..devices import describe, local_devices

    return any(describe(d).kind in ("gpu", "igpu") for d in local_devices())
