"""A bounded load generator for a Hoshikage server on loopback.

``run_load(url, clients, rounds, ...)`` starts ``clients`` asyncio clients; each sends
``rounds`` requests one after another, picking (from a seeded RNG) the model (autoregressive or
diffusion), the endpoint, streamed or not, and whether to disconnect midway. Every request is
classified:

- ``ok``: a complete answer (JSON with content and finish_reason; or an SSE stream with a
  finish_reason chunk and ``[DONE]``);
- ``429`` / ``503``: an explicit refusal (server_busy; queue_timeout, processing_timeout) with
  its error body and Retry-After;
- ``stream-error``: a stream that ended with an explicit ``{"error": ...}`` event and ``[DONE]``;
- ``disconnected``: we hung up on purpose;
- ``bad``: anything else (a wrong status, a truncated answer, a connection error): a failure.

Only loopback URLs are accepted; the run is bounded by ``clients * rounds`` and ``deadline_s``.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx

PROMPTS = ["Name a colour.", "Count to five.", "What is a cat?", "Say hello in French.", "Give me a word."]


@dataclass
class Outcome:
    kind: str  # ok, 429, 503, stream-error, disconnected, bad
    model: str
    stream: bool
    latency: float
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0
    sent: int = 0

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.outcomes)

    def latencies(self, model_kind: str | None = None) -> list[float]:
        return sorted(o.latency for o in self.outcomes if o.kind == "ok"
                      and (model_kind is None or _model_kind(o.model) == model_kind))

    def summary(self) -> dict:
        lat = self.latencies()
        out = {"requests": self.sent, "answered": len(self.outcomes), "wall_s": round(self.wall_s, 1),
               "ok": self.count("ok"), "429": self.count("429"), "503": self.count("503"),
               "stream_error": self.count("stream-error"), "disconnected": self.count("disconnected"),
               "bad": self.count("bad"),
               "completed_per_s": round(self.count("ok") / self.wall_s, 2) if self.wall_s else 0.0}
        for name, values in (("all", lat), ("autoregressive", self.latencies("autoregressive")),
                             ("diffusion", self.latencies("diffusion"))):
            if values:
                out[f"p50_{name}_s"] = round(_pct(values, 50), 2)
                out[f"p99_{name}_s"] = round(_pct(values, 99), 2)
        return out


def _pct(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def _model_kind(model: str) -> str:
    return "autoregressive" if model.startswith("smol") else "diffusion"


def _request(rng: random.Random, models: list[str]) -> tuple[str, dict, bool]:
    model = rng.choice(models)
    stream = rng.random() < 0.5
    body: dict = {"model": model, "max_tokens": rng.choice([4, 8, 12]), "stream": stream, "seed": rng.randrange(1000)}
    if rng.random() < 0.7:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": rng.choice(PROMPTS)}]
    else:
        path = "/v1/completions"
        body["prompt"] = rng.choice(PROMPTS)
    if _model_kind(model) == "diffusion":
        body["diffusion_steps"] = rng.choice([2, 4, 8])
    return path, body, stream


def _explicit_refusal(r: httpx.Response, body: bytes) -> str | None:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    if r.status_code == 429 and code == "server_busy" and r.headers.get("retry-after"):
        return "429"
    if r.status_code == 503 and code in ("queue_timeout", "processing_timeout", "shutting_down") \
            and r.headers.get("retry-after"):
        return "503"
    return None


async def _one(client: httpx.AsyncClient, url: str, path: str, body: dict, stream: bool, disconnect: bool) -> Outcome:
    model = body["model"]
    t0 = time.monotonic()
    try:
        if not stream:
            timeout = httpx.Timeout(120, read=0.05) if disconnect else httpx.Timeout(120)
            try:
                r = await client.post(url + path, json=body, timeout=timeout)
            except httpx.ReadTimeout:
                if disconnect:
                    return Outcome("disconnected", model, stream, time.monotonic() - t0)
                raise
            if r.status_code == 200:
                data = r.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] if "message" in choice else choice["text"]
                if isinstance(text, str) and choice["finish_reason"] in ("stop", "length"):
                    return Outcome("ok", model, stream, time.monotonic() - t0)
                return Outcome("bad", model, stream, time.monotonic() - t0, f"incomplete answer {data}")
            kind = _explicit_refusal(r, r.content)
            return Outcome(kind or "bad", model, stream, time.monotonic() - t0, f"{r.status_code} {r.text[:200]}")
        async with client.stream("POST", url + path, json=body, timeout=120) as r:
            if r.status_code != 200:
                raw = await r.aread()
                kind = _explicit_refusal(r, raw)
                return Outcome(kind or "bad", model, stream, time.monotonic() - t0, f"{r.status_code} {raw[:200]!r}")
            finish, done, error = None, False, None
            async for line in r.aiter_lines():
                if disconnect:  # the first byte came: hang up
                    return Outcome("disconnected", model, stream, time.monotonic() - t0)
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    done = True
                    break
                event = json.loads(payload)
                if "error" in event:
                    error = event["error"].get("code")
                    continue
                for choice in event.get("choices", []):
                    finish = choice.get("finish_reason") or finish
            latency = time.monotonic() - t0
            if done and finish in ("stop", "length") and error is None:
                return Outcome("ok", model, stream, latency)
            if done and error in ("processing_timeout", "shutting_down"):
                return Outcome("stream-error", model, stream, latency, error)
            return Outcome("bad", model, stream, latency, f"stream ended: done={done} finish={finish} error={error}")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return Outcome("bad", model, stream, time.monotonic() - t0, repr(exc))


async def _run(url: str, clients: int, rounds: int, models: list[str], seed: int, disconnect_share: float,
               deadline_s: float, report: Report) -> None:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            for _ in range(rounds):
                if time.monotonic() > stop_at:
                    return
                path, body, stream = _request(rng, models)
                disconnect = rng.random() < disconnect_share
                report.sent += 1
                outcome = await _one(client, url, path, body, stream, disconnect)
                report.outcomes.append(outcome)
                if outcome.kind in ("429", "503"):
                    await asyncio.sleep(rng.uniform(0.5, 1.5))  # Retry-After: 1

        stop_at = time.monotonic() + deadline_s
        await asyncio.gather(*(worker(i) for i in range(clients)))


def run_load(url: str, *, clients: int, rounds: int, models: list[str], seed: int = 6,
             disconnect_share: float = 0.1, deadline_s: float = 600) -> Report:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load tests target loopback only, not {host}")
    report = Report()
    t0 = time.monotonic()
    asyncio.run(_run(url, clients, rounds, models, seed, disconnect_share, deadline_s, report))
    report.wall_s = time.monotonic() - t0
    return report
