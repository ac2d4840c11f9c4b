"""Shared pieces of the harness: measured subprocesses, statistics, the machine, the build.

Every side of a comparison runs as its own process, so its peak RSS is its own (Python
included for Hoshikage): ``run_measured`` reaps the child with ``os.wait4`` and keeps that
child's ``ru_maxrss``, which ``RUSAGE_CHILDREN`` (a maximum over all children) cannot give.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """A side failed, or an assertion of the harness (e.g. token identity) did not hold."""


@dataclass
class Proc:
    """A finished subprocess: exit code, output, wall seconds and its own peak RSS in MB."""

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mb: float

    def check(self, what: str) -> Proc:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout)[-2500:]
            raise BenchError(f"{what} failed (exit {self.returncode}): {' '.join(self.cmd)[:400]}\n{tail}")
        return self


def run_measured(cmd: Sequence[str], *, timeout: float = 1800, env: dict | None = None,
                 cwd: Path | None = None) -> Proc:
    """Run ``cmd`` to completion; its stdout/stderr go through temporary files (no pipe stalls)."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        # A canvas may end inside a multi-byte character: decode as Hoshikage's detokenize does.
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    if proc.returncode == -9 and wall >= timeout:
        stderr += f"\n[harness] killed after {timeout:.0f} s"
    # Linux reports ru_maxrss in KiB.
    return Proc(cmd, proc.returncode, stdout, stderr, wall, usage.ru_maxrss / 1024)


def python_cmd(module: str, *args: str) -> list[str]:
    """``python -m module args`` with the interpreter running the harness (the project's venv)."""
    return [sys.executable, "-m", module, *args]


def hk_env() -> dict[str, str]:
    """The environment of Hoshikage's side: the user's own, with this checkout importable."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ---------------------------------------------------------------------------------------------
# statistics


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """median / min / max / n of the values that exist (None = that run had no figure)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def fmt(s: dict[str, Any] | None, digits: int = 2, unit: str = "") -> str:
    """'1.23 (1.10–1.40)' from a summary; '—' if empty."""
    if not s or s.get("median") is None:
        return "—"
    f = f"{{:.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"]) + unit
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}–{f.format(s['max'])})"


def alternate(reps: int, sides: Sequence[tuple[str, Callable[[], dict]]],
              log: Callable[[str], None]) -> list[dict[str, dict]]:
    """Run every side once per repetition, rotating which goes first, so drift hits all alike.

    Returns one dict per repetition: side name -> that side's figures.
    """
    out = []
    for rep in range(reps):
        order = list(sides[rep % len(sides):]) + list(sides[:rep % len(sides)])
        row = {}
        for name, fn in order:
            row[name] = fn()
        log(f"    rep {rep + 1}/{reps}: " + ", ".join(f"{n} {_brief(row[n])}" for n, _ in sides))
        out.append(row)
    return out


def _brief(fig: dict) -> str:
    for key in ("total_ms", "gen_tps", "wall_ms"):
        if fig.get(key) is not None:
            return f"{key}={fig[key]:.1f}"
    return ""


# ---------------------------------------------------------------------------------------------
# machine and build


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_gb = round(int(m.group(1)) / 2**20, 1) if m else None
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "os": platform.platform(),
        "python": sys.version.split()[0], "load_average_at_start": list(os.getloadavg()),
    }


def native_manifest() -> dict[str, Any]:
    """The build manifest of the libllama Hoshikage uses (tools, source tree, commit)."""
    from hoshikage import _ffi

    return _ffi.native_build().manifest


def tool(manifest: dict, name: str) -> Path | None:
    path = manifest.get("tools", {}).get(name)
    return Path(path) if path and Path(path).is_file() else None


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
