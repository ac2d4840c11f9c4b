"""RPC split: one generation on this machine alone, and split over two loopback rpc-servers.

Both sides run in this process and take turns (common.alternate): the local model and the split
one (``rpc`` = two ``ggml-rpc-server`` processes on 127.0.0.1, CPU backend, ``tensor_split``
1,1; this CPU keeps the first layers, as in tests/test_rpc.py) are loaded once, then every
repetition times one greedy generation on each. Autoregressive: SmolLM2, tokens/s of the token
loop. Diffusion: a test model, tokens/s of the whole loop and ms per step. Ratio = split ÷ local,
per repetition. The answers must be token-identical (BenchError otherwise). On one machine the
split only adds work (every pass crosses two TCP hops), so the ratio is the price of the
transport, not a speed-up; across machines it is what lets a model larger than one machine run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .common import BenchError, alternate, ratio, summary

AR_SPLIT = {"n_gpu_layers": 20, "tensor_split": [1, 1]}  # SmolLM2: 11 of 30 layers stay here
DIFFUSION_SPLIT = {"n_gpu_layers": 2, "tensor_split": [1, 1]}  # 2 layers: here, server 1; output: server 2


def _ar_side(model: Any, threads: int, max_tokens: int, tokens: list) -> Callable[[], dict]:
    import hoshikage as hk

    def run() -> dict:
        c = hk.generate(model, messages=[{"role": "user", "content": "Write a short story about a lighthouse "
                                                              "keeper."}], max_tokens=max_tokens,
                        temperature=0.0, seed=1, n_threads=threads)
        if c.completion_tokens < max_tokens:
            raise BenchError(f"rpc ar: {c.completion_tokens} of {max_tokens} tokens generated ({c.finish_reason})")
        tokens.append(c.tokens)
        return {"gen_tps": c.completion_tokens / c.timings.generation_seconds}

    return run


def _diffusion_side(model: Any, threads: int, tokens: list) -> Callable[[], dict]:
    import hoshikage as hk

    def run() -> dict:
        c = hk.generate(model, prompt_tokens=list(range(5, 13)), max_tokens=56, temperature=0.0, seed=1,
                        n_threads=threads, diffusion={"steps": 14, "block_length": 8,
                                                      "schedule": hk.Schedule.BLOCK_BASED})
        tokens.append(c.tokens)
        gen = c.timings.generation_seconds
        return {"gen_tps": len(c.tokens) / gen, "wall_ms": 1000 * gen / c.timings.steps}

    return run


def _compare(name: str, path: Path, split: dict, endpoints: list[str], make_side, reps: int,
             log: Callable[[str], None]) -> dict[str, Any]:
    import hoshikage as hk

    local_tokens: list = []
    split_tokens: list = []
    with hk.Model(path) as local, hk.Model(path, rpc=endpoints, **split) as remote:
        placed = {k: v for k, v in remote.placement.buffers.items()}
        rows = alternate(reps, [("local", make_side(local, local_tokens)), ("split", make_side(remote, split_tokens))],
                         log)
    if any(a != b for a, b in zip(local_tokens, split_tokens)):
        raise BenchError(f"rpc {name}: the split model's tokens differ from the local model's")
    out: dict[str, Any] = {"model": path.name, "split": split, "buffers_mb": placed, "tokens_identical": True}
    for key in ("gen_tps", "wall_ms"):
        if rows and key in rows[0]["local"]:
            out[f"local_{key}"] = summary([r["local"][key] for r in rows])
            out[f"split_{key}"] = summary([r["split"][key] for r in rows])
            out[f"{key}_ratio"] = summary([ratio(r["split"][key], r["local"][key]) for r in rows])
    return out


def run_rpc(smollm2: Path, diffusion_model: Path, program: Path, threads: int, reps: int, quick: bool,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Both comparisons over two loopback servers started (and stopped) here."""
    from hoshikage.testing.rpc_servers import start_servers

    servers = start_servers(program, count=2, threads=threads)
    endpoints = [s.endpoint for s in servers]
    try:
        log(f"    rpc-servers: {', '.join(endpoints)} ({threads} thread(s) each)")
        max_tokens = 32 if quick else 64
        ar = _compare("ar", smollm2, AR_SPLIT, endpoints,
                      lambda m, t: _ar_side(m, threads, max_tokens, t), reps, log)
        ar["max_tokens"] = max_tokens
        dlm = _compare("diffusion", diffusion_model, DIFFUSION_SPLIT, endpoints,
                       lambda m, t: _diffusion_side(m, threads, t), reps, log)
    finally:
        for server in servers:
            server.stop()
    return {"servers": endpoints, "ar": ar, "diffusion": dlm,
            "ar_tps_ratio": ar["gen_tps_ratio"]["median"],
            "diffusion_step_ms_ratio": dlm["wall_ms_ratio"]["median"]}


def _split(split: dict) -> str:
    return f"n_gpu_layers {split['n_gpu_layers']}, tensor_split {','.join(f'{x:g}' for x in split['tensor_split'])}"


def tables(c: dict) -> list[str]:
    """RESULTS.md rows (report.py)."""
    from .common import fmt

    if "error" in c:
        return [f"**Failed:** `{c['error'].splitlines()[0]}`"]
    ar, d = c["ar"], c["diffusion"]
    return [f"Two `ggml-rpc-server` processes on 127.0.0.1 (CPU backend), this process the client; local "
            f"and split models loaded once, asked alternately; ratio = split ÷ local per repetition. Tokens "
            f"identical on both: {'yes' if ar['tokens_identical'] and d['tokens_identical'] else '**no**'}.", "",
            "| | local | split over 2 servers | split ÷ local |", "|---|---|---|---|",
            f"| SmolLM2 greedy, {ar['max_tokens']} tokens: tokens/s ({_split(ar['split'])}) | {fmt(ar['local_gen_tps'], 1)} | "
            f"{fmt(ar['split_gen_tps'], 1)} | {fmt(ar['gen_tps_ratio'], 3)} |",
            f"| {d['model']}, 64-token canvas, 14 steps: tokens/s | {fmt(d['local_gen_tps'], 1)} | "
            f"{fmt(d['split_gen_tps'], 1)} | {fmt(d['gen_tps_ratio'], 3)} |",
            f"| {d['model']}: ms per step ({_split(d['split'])}) | {fmt(d['local_wall_ms'], 1)} | {fmt(d['split_wall_ms'], 1)} | "
            f"{fmt(d['wall_ms_ratio'], 3)} |"]
