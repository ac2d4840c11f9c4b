"""Fixtures for the sampler tests: C++ reference harnesses (built on demand, skipped with
a reason when g++ or the cached llama.cpp build is missing) and synthetic logits."""
from __future__ import annotations

import ctypes
import struct
import subprocess

import numpy as np
import pytest

import _sampling_refs as refs
from hoshikage.sampling import DiffusionParams


@pytest.fixture(scope="session")
def stl_ref():
    exe = str(refs.stl_ref())

    def run(keys: np.ndarray, middle: int) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.float32)
        out = subprocess.run([exe], input=struct.pack("<ii", len(keys), middle) + keys.tobytes(),
                             capture_output=True, check=True).stdout
        return np.frombuffer(out, dtype=np.int32)

    return run


@pytest.fixture(scope="session")
def chain_ref():
    """Rows of logits through llama.cpp's chain: [(selected, size, sorted, ids, p)]."""
    exe = str(refs.chain_ref())

    def run(L: np.ndarray, *, top_k=0, top_p=1.0, temp=0.0, seed=0):
        L = np.ascontiguousarray(L, dtype=np.float32)
        r, n = L.shape
        hdr = struct.pack("<iiiffIi", r, n, top_k, top_p, temp, seed, 0)
        out = subprocess.run([exe], input=hdr + L.tobytes(), capture_output=True,
                             check=True).stdout
        res, off = [], 0
        for _ in range(r):
            sel, size, srt = struct.unpack_from("<iii", out, off)
            off += 12
            rec = np.frombuffer(out, dtype=[("id", "<i4"), ("p", "<f4")], count=size, offset=off)
            off += 8 * size
            res.append((sel, size, bool(srt), rec["id"].copy(), rec["p"].copy()))
        return res

    return run


class _LoopParams(ctypes.Structure):
    _fields_ = [("steps", ctypes.c_int32), ("temperature", ctypes.c_float),
                ("mask_token_id", ctypes.c_int32), ("seed", ctypes.c_int32),
                ("shift_logits", ctypes.c_int32), ("top_p", ctypes.c_float),
                ("top_k", ctypes.c_int32), ("algorithm", ctypes.c_int32),
                ("schedule", ctypes.c_int32), ("cfg_scale", ctypes.c_float),
                ("eps", ctypes.c_float), ("block_length", ctypes.c_int32),
                ("alg_temp", ctypes.c_float), ("add_gumbel_noise", ctypes.c_int32),
                ("max_length", ctypes.c_int32)]


_LOGITS_CB = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32,
                              ctypes.POINTER(ctypes.c_float), ctypes.c_void_p)
_STEP_CB = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_int32, ctypes.c_int32,
                            ctypes.POINTER(ctypes.c_int32), ctypes.c_int32, ctypes.c_void_p)


@pytest.fixture(scope="session")
def loop_lib():
    lib = refs.loop_ref()
    i32p = ctypes.POINTER(ctypes.c_int32)
    lib.hk_loop_ref.restype = ctypes.c_int32
    lib.hk_loop_ref.argtypes = [i32p, ctypes.c_int32, i32p, ctypes.POINTER(_LoopParams),
                                ctypes.c_int32, _LOGITS_CB, ctypes.c_void_p, _STEP_CB,
                                ctypes.c_void_p]
    lib.hk_transfer_count.restype = ctypes.c_int32
    lib.hk_transfer_count.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                      ctypes.c_int32, ctypes.c_float]
    lib.hk_num_transfer_tokens.restype = None
    lib.hk_num_transfer_tokens.argtypes = [ctypes.c_int32, ctypes.c_int32, i32p]
    return lib


@pytest.fixture(scope="session")
def loop_ref(loop_lib):
    """llama.cpp's diffusion_generate on synthetic logits: (tokens, [(step, total)])."""

    def run(prompt, *, canvas_length, n_vocab, mask_token_id, params: DiffusionParams,
            logits_fn, shift_logits):
        trace = []

        def cb(tok, n, out, _):
            L = np.ascontiguousarray(logits_fn(np.ctypeslib.as_array(tok, (n,)).copy()),
                                     dtype=np.float32)
            ctypes.memmove(out, L.ctypes.data, L.nbytes)

        def scb(step, total, tok, n, _):
            trace.append((step, total))
            return True

        p = _LoopParams(params.steps, params.temperature, mask_token_id, params.seed,
                        int(shift_logits), params.top_p, params.top_k, int(params.algorithm),
                        int(params.schedule), params.cfg_scale, params.eps, params.block_length,
                        params.alg_temp, int(params.add_gumbel_noise), canvas_length)
        inp = np.asarray(prompt, dtype=np.int32)
        out = np.zeros(canvas_length, dtype=np.int32)
        i32p = ctypes.POINTER(ctypes.c_int32)
        c_cb, c_scb = _LOGITS_CB(cb), _STEP_CB(scb)
        n = loop_lib.hk_loop_ref(inp.ctypes.data_as(i32p), len(inp), out.ctypes.data_as(i32p),
                                 ctypes.byref(p), n_vocab, c_cb, None, c_scb, None)
        assert n == canvas_length
        return out, trace

    return run


def synthetic_logits(canvas: int, n_vocab: int, seed: int, quant: float | None = None,
                     mask_token_id: int | None = None):
    """A deterministic logits_fn: per-position base logits plus a term that depends on the
    tokens at and before each position, so unmasking changes later steps. ``quant`` rounds
    the logits to a grid (many ties). The mask token can be made unlikely."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal((canvas, n_vocab)) * 3).astype(np.float32)
    d = min(n_vocab, 64)
    emb = rng.standard_normal((n_vocab, d)).astype(np.float32)
    proj = rng.standard_normal((d, n_vocab)).astype(np.float32)

    def fn(tokens: np.ndarray) -> np.ndarray:
        h = emb[np.asarray(tokens)]
        h = (h + np.roll(h, 1, axis=0)) * np.float32(0.5)
        out = base + (h @ proj).astype(np.float32) * np.float32(0.3)
        if quant:
            out = (np.round(out / quant) * quant).astype(np.float32)
        if mask_token_id is not None:
            out[:, mask_token_id] = np.float32(-30.0)
        return np.ascontiguousarray(out, dtype=np.float32)

    return fn
