"""Where a registered model's layers go: its registry entry's ``rpc`` / ``tensor_split`` /
``n_gpu_layers``, else the settings' RPC_SERVERS / TENSOR_SPLIT / N_GPU_LAYERS.

With RPC servers and N_GPU_LAYERS left at 0, every layer is offloaded (Model's own default with
``rpc``): the servers are there to hold layers. Nothing here touches the native library.
"""
from __future__ import annotations

from typing import Any

from .registry import ModelEntry
from .settings import Settings


def rpc_servers(entry: ModelEntry, settings: Settings) -> list[str]:
    """The RPC servers ``entry`` is loaded across ([] = this machine only)."""
    return list(entry.rpc or settings.rpc_servers)


def load_options(entry: ModelEntry, settings: Settings) -> dict[str, Any]:
    """Model(...) keywords: rpc, tensor_split, n_gpu_layers."""
    rpc = rpc_servers(entry, settings)
    if entry.n_gpu_layers is not None:
        layers: int | None = entry.n_gpu_layers
    else:
        layers = settings.n_gpu_layers if settings.n_gpu_layers or not rpc else None
    split = list(entry.tensor_split or settings.tensor_split)
    return {"rpc": rpc or None, "tensor_split": split or None, "n_gpu_layers": layers}
