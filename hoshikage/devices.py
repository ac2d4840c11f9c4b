"""Devices llama.cpp can put a model on: this machine's (CPU, GPU) and RPC servers' (llama.cpp's
``rpc-server``), their memory, and the device list a Model is loaded with.

Every endpoint is checked reachable (hoshikage.rpc_endpoints) before llama.cpp connects to it,
since its RPC client aborts the process otherwise; the server runs models that use RPC in a
child process (``hoshikage.server.isolated``), where an abort mid-call ends that child only.

Hoshikage never registers an RPC server with ggml globally: the devices are passed to the one
model that asked for them (``llama_model_params.devices``), so no other model lands on them.
"""
from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import _ffi
from .errors import ModelLoadError, ParameterError
from .rpc_endpoints import (ConnectionWatch, RPCConnectionLost, check_reachable, parse_endpoints,
                            parse_tensor_split)

MiB = 2**20


@dataclass(frozen=True)
class Device:
    """One device as ggml reports it. kind: cpu, gpu, igpu, accel or rpc; memory in bytes."""

    name: str
    description: str
    kind: str
    free_bytes: int
    total_bytes: int
    endpoint: str | None = None  # HOST:PORT of an RPC device

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "kind": self.kind,
                               "free_mb": round(self.free_bytes / MiB, 1), "total_mb": round(self.total_bytes / MiB, 1)}
        if self.endpoint is not None:
            out["endpoint"] = self.endpoint
        return out


def check_connections(placement: Placement, what: str) -> None:
    """RPCConnectionLost naming the server if one ``placement``'s model uses closed its connection."""
    lost = placement.lost()
    if lost is not None:
        raise RPCConnectionLost(f"the RPC server {lost} closed its connection (it stopped or was killed); "
                                f"{what} cannot run on it until it is loaded again")


class _CheckedLib:
    """libllama for a Context of a model on RPC servers. The calls that reach the servers first
    check that none closed its connection (RPCConnectionLost naming it, instead of llama.cpp's
    abort); ``llama_free`` leaves a context whose server is gone (freeing its remote buffers
    would abort)."""

    REACHES_SERVERS = frozenset({"llama_decode", "llama_encode", "llama_memory_clear", "llama_memory_seq_rm"})

    def __init__(self, lib: Any, model: Any):
        self._lib, self._model = lib, model

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._lib, name)
        if name not in self.REACHES_SERVERS:
            return fn

        def checked(*args: Any) -> Any:
            check_connections(self._model.placement, self._model.path.name)
            return fn(*args)

        return checked

    def llama_free(self, ctx: Any) -> None:
        if self._model.placement.lost() is None:
            self._lib.llama_free(ctx)


def checked_lib(lib: Any, model: Any) -> Any:
    """``lib`` itself, or for a model on RPC servers a _CheckedLib around it."""
    return _CheckedLib(lib, model) if getattr(model, "rpc", None) else lib


def _kind(lib: Any, dev: Any) -> str:
    types = _ffi.ffi.typeof("enum ggml_backend_dev_type").elements  # value -> GGML_BACKEND_DEVICE_TYPE_X
    reg = lib.ggml_backend_dev_backend_reg(dev)
    if reg != _ffi.NULL and _ffi.ffi.string(lib.ggml_backend_reg_name(reg)).decode().startswith("RPC"):
        return "rpc"
    return types.get(int(lib.ggml_backend_dev_type(dev)), "unknown").rsplit("_", 1)[-1].lower()


def describe(dev: Any) -> Device:
    """A ``ggml_backend_dev_t`` as a Device (for an RPC device this asks its server: check it first)."""
    lib, ffi = _ffi.lib(), _ffi.ffi
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    lib.ggml_backend_dev_memory(dev, free, total)
    kind = _kind(lib, dev)
    description = ffi.string(lib.ggml_backend_dev_description(dev)).decode("utf-8", "replace")
    return Device(ffi.string(lib.ggml_backend_dev_name(dev)).decode("utf-8", "replace"), description, kind,
                  int(free[0]), int(total[0]), description if kind == "rpc" else None)


def local_devices() -> list[Any]:
    """This machine's devices as ggml registered them (``ggml_backend_dev_t``; CPU first)."""
    lib = _ffi.lib()
    return [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]


def rpc_devices(endpoints: Sequence[str]) -> list[Any]:
    """The devices of each RPC server, in order (``ggml_backend_dev_t``); each endpoint checked first."""
    lib = _ffi.lib()
    if endpoints and lib.ggml_backend_reg_by_name(b"RPC") == _ffi.NULL:
        raise ModelLoadError("this native build has no RPC backend; rebuild it with: python build_llama.py --rpc "
                             "(make build does)")
    devices = []
    for endpoint in endpoints:
        check_reachable(endpoint)
        reg = lib.ggml_backend_rpc_add_server(endpoint.encode())
        if reg == _ffi.NULL:
            raise ModelLoadError(f"the RPC server {endpoint} reports no devices")
        devices += [lib.ggml_backend_reg_dev_get(reg, i) for i in range(lib.ggml_backend_reg_dev_count(reg))]
    return devices


class BufferLog:
    """MiB per buffer as llama.cpp logs their allocation during a call on this thread:
    ``{"RPC0[127.0.0.1:50052]": {"model": 42.1}, "CPU_Mapped": {"model": 80.0}}`` (kinds: model,
    kv, compute, output). Buffer names are llama.cpp's: ``CPU*`` host memory, ``RPC<i>[HOST:PORT]``
    device ``i`` of that server, otherwise the device's own name (``CUDA0``)."""

    LINE = re.compile(r"(\S+) +(model|KV|compute|output) buffer size = +([\d.]+) MiB")

    def __init__(self) -> None:
        self.sizes: dict[str, dict[str, float]] = {}
        self._thread = threading.get_ident()

    def __call__(self, level: int, message: str) -> None:
        m = self.LINE.search(message) if threading.get_ident() == self._thread else None
        if m:
            kinds = self.sizes.setdefault(m.group(1), {})
            kinds[m.group(2).lower()] = round(kinds.get(m.group(2).lower(), 0.0) + float(m.group(3)), 2)

    def __enter__(self) -> BufferLog:
        _ffi.log_taps.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ffi.log_taps.remove(self)


def _buffer_device(buffer: str, devices: list[Device]) -> Device | None:
    """The device a llama.cpp buffer lives on (None: host memory, the CPU)."""
    if "[" in buffer:  # RPC<index on that server>[HOST:PORT]
        index, endpoint = buffer[3:].split("[", 1)
        same = [d for d in devices if d.endpoint == endpoint.rstrip("]")]
        return same[int(index)] if index.isdigit() and int(index) < len(same) else None
    return next((d for d in devices if d.kind != "cpu" and buffer.startswith(d.name)), None)


def model_devices(model: Any) -> list[dict[str, Any]]:
    """This machine's CPU and every device ``model`` was loaded across, with their free and total
    memory now and the MiB of the model's buffers on each (RPCConnectionLost if a server left)."""
    check_connections(model.placement, model.path.name)
    local = [describe(d) for d in local_devices()]
    used = [describe(d) for d in model.placement.devices] if model.rpc else [d for d in local if d.kind != "cpu"]
    found = [d for d in local if d.kind == "cpu"][:1] + used
    placed: dict[int, dict[str, float]] = {}
    for buffer, kinds in model.placement.buffers.items():
        device = _buffer_device(buffer, used)
        target = placed.setdefault(found.index(device) if device in found else 0, {})
        for kind, mib in kinds.items():
            target[kind] = round(target.get(kind, 0.0) + mib, 2)
    return [{**d.as_dict(), "buffers_mb": placed.get(i, {})} for i, d in enumerate(found)]


class Placement:
    """The device list and split proportions a Model is loaded with (llama.cpp's ``--rpc`` and
    ``--tensor-split``): the RPC servers' devices first, then this machine's GPUs, as llama.cpp's
    tools order them. The CPU holds the layers ``n_gpu_layers`` leaves out. Keeps the C arrays
    alive for the load."""

    def __init__(self, rpc: str | Sequence[str] | None, tensor_split: str | Sequence[float] | None):
        self.endpoints = parse_endpoints(rpc)
        self.split = parse_tensor_split(tensor_split)
        self.devices: list[Any] = []
        self.buffers: dict[str, dict[str, float]] = {}  # filled by the load (BufferLog)
        self.watch: ConnectionWatch | None = None  # the RPC connections, found after the load
        self._arrays: list[Any] = []

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """Around the load: its buffer sizes become ``buffers``; then the connections to the RPC
        servers (opened by the load) are found for ``lost()``."""
        with BufferLog() as log:
            self.buffers = log.sizes
            yield
        if self.endpoints:
            self.watch = ConnectionWatch(self.endpoints)

    def lost(self) -> str | None:
        """An RPC server whose connection was lost since the load, else None."""
        return self.watch.lost() if self.watch is not None else None

    def apply(self, params: Any) -> None:
        """Fill ``llama_model_params.devices`` / ``tensor_split``; ModelLoadError if unreachable."""
        if not (self.endpoints or self.split):
            return  # llama.cpp's own device choice: nothing to ask ggml
        lib, ffi = _ffi.lib(), _ffi.ffi
        gpus = [d for d in local_devices() if _kind(lib, d) in ("gpu", "igpu")]
        if self.endpoints:
            self.devices = rpc_devices(self.endpoints) + gpus
            devices = ffi.new("ggml_backend_dev_t[]", [*self.devices, ffi.NULL])
            self._arrays.append(devices)
            params.devices = devices
        if self.split:
            n_max = int(lib.llama_max_devices())
            n_devices = len(self.devices) if self.endpoints else len(gpus)
            if len(self.split) > max(n_devices, 1) or len(self.split) > n_max:
                raise ParameterError(f"tensor_split: {len(self.split)} proportions for {n_devices} device(s) "
                                     "(the RPC servers' devices, then this machine's GPUs)", "tensor_split")
            split = ffi.new("float[]", n_max)  # llama.h: size llama_max_devices()
            for i, x in enumerate(self.split):
                split[i] = x
            self._arrays.append(split)
            params.tensor_split = split
