"""Peak RSS of one diffusion request: llama-diffusion-cli against the Hoshikage server.

Not a test (pytest does not collect it): a measurement for docs/server.md. Same model, canvas,
steps, prompt (chat template applied by both), timestep schedule, 1 thread, with and without
CFG. The server's figure is its VmHWM after the request; llama-diffusion-cli's is /usr/bin/time's
maximum resident set size. Note: llama-diffusion-cli parses --diffusion-cfg-scale but never
uses it, so its "with CFG" run is the same computation.

    python tests/server/measure_peak_rss.py [preset] [canvas]     # default: llada-bench 256
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import LiveServer  # tests/server/conftest.py (this script's folder is on sys.path)

import hoshikage as hk
from hoshikage import _ffi
from hoshikage.testing.diffusion_models import ensure_test_model

PROMPT = "Write a short poem about the sea."
STEPS = 16


def cli_peak_mb(model: Path, canvas: int, cfg: float) -> float:
    cli = _ffi.native_build().tools["llama-diffusion-cli"]
    cmd = ["/usr/bin/time", "-v", cli, "-m", str(model), "-p", PROMPT, "-ub", str(canvas), "-c", str(canvas),
           "--diffusion-steps", str(STEPS), "--diffusion-eps", "0.001", "-t", "1", "--temp", "0", "--seed", "1"]
    if cfg:
        cmd += ["--diffusion-cfg-scale", str(cfg)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1)) / 1024


def server_peak_mb(model: Path, canvas: int, n_prompt: int, cfg: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix="hoshikage-rss-"))
    (home / "model_map.json").write_text(json.dumps({"m": {"path": str(model), "diffusion": {"schedule": 0}}}))
    server = LiveServer(home, {"RAMDISK_PATH": "", "N_CTX": str(canvas)}).start()
    try:
        idle = server.status()["memory"]["peak_rss_mb"]
        body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": canvas - n_prompt,
                "diffusion_steps": STEPS, "temperature": 0, "seed": 1, "diffusion_cfg_scale": cfg}
        t0 = time.monotonic()
        r = server.post("/v1/chat/completions", body, timeout=1800)
        r.raise_for_status()
        ext = r.json()["hoshikage"]
        return {"idle": idle, "peak": server.status()["memory"]["peak_rss_mb"], "estimate": ext["memory_estimate_mb"],
                "canvas": ext["params"]["canvas_length"], "seconds": time.monotonic() - t0}
    finally:
        server.stop()


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "llada-bench"
    canvas = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    model = ensure_test_model(preset)
    with hk.Model(model) as m:
        n_prompt = len(hk.prepare_prompt(m, messages=[{"role": "user", "content": PROMPT}]))
        weights_mb = m.size_bytes / 2**20
    print(f"{preset}: {weights_mb:.0f} MiB of weights, canvas {canvas} ({n_prompt} prompt), {STEPS} steps, 1 thread")
    for cfg in (0.0, 1.5):
        cli = cli_peak_mb(model, canvas, cfg)
        s = server_peak_mb(model, canvas, n_prompt, cfg)
        print(f"cfg {cfg}: llama-diffusion-cli {cli:.0f} MiB | server {s['peak']:.0f} MiB (idle {s['idle']:.0f}, "
              f"estimate for the request {s['estimate']:.0f}, measured for it "
              f"{s['peak'] - s['idle'] - weights_mb:.0f}; {s['seconds']:.1f}s)")


if __name__ == "__main__":
    main()
