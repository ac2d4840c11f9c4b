"""Answer one prompt with one set of llama-diffusion-cli flags: Hoshikage in-process (the
flags parsed by ``hoshikage generate``'s own parser) or the reference ``llama-diffusion-cli``.

Both report the answer, the canvas after the prompt as the CLI prints it, the model calls
(forwards) and the seconds spent in the diffusion loop (llama.cpp's "total time" for the
reference; decode + sampling for Hoshikage), so answer tokens per second compare like for like.
"""
from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_TOTAL = re.compile(rb"total time: ([\d.]+)ms, time per step: ([\d.]+)ms")


@dataclass(frozen=True)
class Answer:
    text: str          # the answer (Hoshikage: up to the first end-of-generation token)
    canvas: str        # the canvas after the prompt as llama-diffusion-cli prints it, decoded
                       # from UTF-8 with replacement (as Hoshikage's canvas_text)
    answer_tokens: int  # tokens of the answer (at least 1)
    forwards: int      # model calls
    seconds: float     # the diffusion loop


def with_flags(args: tuple[str, ...] | list[str], set_: dict[str, str | None]) -> list[str]:
    """``args`` with each flag in ``set_`` replaced (value None: removed; flag absent: added)."""
    out, i, args = [], 0, list(args)
    while i < len(args):
        a = args[i]
        if a in set_:
            i += 2 if i + 1 < len(args) and not args[i + 1].startswith("--") else 1
            continue
        out.append(a)
        i += 1
    for flag, value in set_.items():
        if value is not None:
            out += [flag] if value == "" else [flag, value]
    return out


class HoshikageRunner:
    """One loaded model; ``answer`` runs what ``hoshikage generate -m PATH -p PROMPT *args``
    runs, without a process per prompt."""

    def __init__(self, path: Path, threads: int):
        import hoshikage as hk
        from hoshikage.cli import build_parser

        self.path, self.threads = path, threads
        self.model = hk.Model(path)
        self.parser = build_parser()

    def close(self) -> None:
        self.model.close()

    def answer(self, prompt: str, args: list[str]) -> Answer:
        from hoshikage import generate, prepare_prompt
        from hoshikage.cli.generate import _diffusion_options

        a = self.parser.parse_args(["generate", "-m", str(self.path), "-p", prompt, "-t", str(self.threads), *args])
        messages = [{"role": "user", "content": prompt}]
        n_prompt = len(prepare_prompt(self.model, messages=messages))
        t0 = time.perf_counter()
        r = generate(self.model, messages=messages, temperature=a.temp, top_k=a.top_k, top_p=a.top_p,
                     seed=a.seed, n_threads=a.threads, max_tokens=a.ubatch_size - n_prompt,
                     diffusion=_diffusion_options(a), adjust=False, n_ctx=max(a.ctx_size, a.ubatch_size))
        wall = time.perf_counter() - t0
        canvas = (r.canvas_text or "").split("\x00")[0]  # the CLI prints a C string: up to the first NUL
        return Answer(r.text, canvas, max(1, len(r.tokens)), r.timings.forwards,
                      r.timings.generation_seconds or wall)


class CliRunner:
    """``llama-diffusion-cli -m PATH -p PROMPT *args``, one process per prompt.

    The pinned llama.cpp's logger is asynchronous and never flushed at exit (its
    ``common_log_main`` leaks the singleton on purpose), so the tool's last lines, its
    result included, are sometimes lost, more often on a busy machine. A run without the
    "total time" line is repeated (the result is seeded, so a repeat is the same run), at
    most ``tries`` times; ``retries`` counts the repeats."""

    def __init__(self, path: Path, threads: int, cli: Path, tries: int = 12):
        self.path, self.threads, self.cli, self.tries = path, threads, cli, tries
        self.retries = 0

    def close(self) -> None:
        pass

    def answer(self, prompt: str, args: list[str]) -> Answer:
        cmd = [str(self.cli), "-m", str(self.path), "-p", prompt, *args, "-t", str(self.threads),
               "--no-log-prefix", "--no-log-timestamps", "--log-colors", "off"]
        for attempt in range(self.tries):
            p = subprocess.run(cmd, capture_output=True, timeout=300)
            log = p.stdout + p.stderr
            m = _TOTAL.search(log)
            if p.returncode != 0:
                raise RuntimeError(f"llama-diffusion-cli failed ({p.returncode}): {log[-1500:]!r}")
            if m and log.endswith(b"\n") and log[m.end():].count(b"\n") >= 3:
                break
            self.retries += 1
        else:
            raise RuntimeError(f"llama-diffusion-cli printed no result in {self.tries} runs: {log[-500:]!r}")
        rest = log[m.end():]
        rest = rest[rest.index(b"\n\n") + 2:] if b"\n\n" in rest else rest
        raw = rest[:-1] if rest.endswith(b"\n") else rest
        steps = int(next(x for x in (args[i + 1] for i, f in enumerate(args) if f == "--diffusion-steps")))
        # forwards: the steps asked for, an upper bound (a block the reference finds full ends after one decode)
        text = raw.decode("utf-8", "replace")
        n_tok = max(1, len(raw.strip()))  # one token per byte (the trained models' byte-level vocabulary)
        return Answer(text, text, n_tok, steps, float(m.group(1)) / 1000)
