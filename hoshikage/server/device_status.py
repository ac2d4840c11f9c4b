"""/v1/status's devices: every device (CPU, GPU, RPC) with its free and total memory, and the
MiB of the loaded model's weights on each (``buffers_mb``: {"model": MiB}, from the load's log).

A model on RPC servers lives in the child process (isolated.py), which reports its devices after
each job; this process never connects to an RPC server itself (an rpc-server serves one client
at a time, and llama.cpp aborts on a lost one). Otherwise the devices are this machine's, read
now; before the native library was first opened the list is empty (opening it is not
/v1/status's business).
"""
from __future__ import annotations

from typing import Any

CHILD_FIELDS = ("loaded_model", "kind", "model_mb", "loaded_for_s", "context")


def device_report(state: Any) -> dict[str, Any]:
    """The status fields about devices, and about the model when the RPC child holds it."""
    try:
        return _report(state)
    except Exception as exc:  # noqa: BLE001 - /v1/status answers whatever a device says
        return {"devices": [], "devices_error": f"{type(exc).__name__}: {exc}"}


def _report(state: Any) -> dict[str, Any]:
    isolated = getattr(state.runner, "isolated", None)
    if isolated is not None and isolated.running and isolated.last_status.get("loaded_model"):
        child = isolated.last_status
        return {**{k: child[k] for k in CHILD_FIELDS if k in child}, "devices": child.get("devices", []),
                "model_process": {"pid": child.get("pid"), "rpc_servers": child.get("rpc_servers", [])}}
    from .. import _ffi

    if not _ffi.is_open():
        return {"devices": []}
    from ..devices import describe, local_devices, model_devices

    model = state.residency.model
    if model is not None and not model.closed:
        return {"devices": model_devices(model)}
    return {"devices": [{**describe(d).as_dict(), "buffers_mb": {}} for d in local_devices()]}
