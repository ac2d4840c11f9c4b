"""Fuzzing the HTTP API with schemathesis, from the live server's own /openapi.json, over every
endpoint: schema-conforming (positive) and schema-violating (negative) requests.

Every answer must be: a 2xx; or a 4xx / documented 5xx with the error shape
``{"error": {"message", "type", "param", "code"}}`` and no stack trace. Part of the
generation requests are pointed at the real models (SmolLM2, LLaDA and Dream test models) so
that the generation path is fuzzed too, not only validation. Afterwards the server must still
be running and answer a normal request.

``make test`` sends 80 requests; ``make fuzz`` (HOSHIKAGE_FUZZ_REQUESTS=1200) more.
"""
from __future__ import annotations

import collections
import json
import random
import time

import httpx
import pytest
from conftest import env_int

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

REQUESTS = env_int("HOSHIKAGE_FUZZ_REQUESTS", 80)
REAL_MODELS = ("smollm2", "llada", "dream")
DOCUMENTED_5XX = {"model_load_failed", "inference_failed", "processing_timeout", "queue_timeout", "shutting_down"}
ERROR_CODES = DOCUMENTED_5XX | {"validation_error", "invalid_request", "memory_budget_exceeded", "model_not_found",
                                "not_found", "invalid_api_key", "forbidden", "server_busy", "request_too_large"}
# Generation on the real models is bounded by these (and by the server's N_CTX / REQUEST_TIMEOUT).
REAL_MODEL_CAPS = {"max_tokens": 24, "max_completion_tokens": 24, "diffusion_steps": 24}


@pytest.fixture(scope="module")
def server(make_server):
    return make_server({"N_CTX": "128", "REQUEST_TIMEOUT": "5", "QUEUE_TIMEOUT": "30", "MAX_TOKENS": "16"})


def _retarget(case, rng: random.Random) -> bool:
    """Point a generation request at a real model (a third of them), with bounded sizes."""
    if not case.path.endswith("completions") or not isinstance(case.body, dict) or rng.random() > 0.33:
        return False
    case.body["model"] = rng.choice(REAL_MODELS)
    for key, cap in REAL_MODEL_CAPS.items():
        if isinstance(case.body.get(key), int) and not isinstance(case.body[key], bool):
            case.body[key] = max(1, min(case.body[key], cap)) if case.body[key] >= 1 else case.body[key]
    return True


def _check(case, response, problems: list[str]) -> str:
    status = response.status_code
    text = response.text
    where = f"{case.method} {case.path} body={json.dumps(case.body, default=str)[:300]} -> {status}"
    if "Traceback" in text or 'File "/' in text:
        problems.append(f"stack trace in the response: {where}: {text[:300]}")
    if status < 400:
        ctype = response.headers.get("content-type") or [""]
        if (ctype[0] if isinstance(ctype, list) else ctype).startswith("text/event-stream"):
            if "data: [DONE]" not in text:
                problems.append(f"stream without [DONE]: {where}")
            return "2xx-stream"
        try:
            response.json()
        except ValueError:
            problems.append(f"2xx that is not JSON: {where}: {text[:200]}")
        return "2xx"
    try:
        err = response.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        problems.append(f"error without the error shape: {where}: {text[:300]}")
        return str(status)
    if err["code"] not in ERROR_CODES:
        problems.append(f"unknown error code {err['code']!r}: {where}")
    if status >= 500 and err["code"] not in DOCUMENTED_5XX:
        problems.append(f"undocumented 5xx: {where}: {text[:300]}")
    return f"{status} {err['code']}"


def test_fuzz_every_endpoint_from_the_openapi_schema(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}
    assert {"POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models", "GET /v1/status",
            "POST /admin/models", "DELETE /admin/models/{name}", "POST /admin/reload"} <= operations, operations
    rng = random.Random(6)
    tally: collections.Counter = collections.Counter()
    per_operation: collections.Counter = collections.Counter()
    problems: list[str] = []
    sent = 0
    t0 = time.monotonic()
    # No shrinking and no example database: each generated case is one request, counted.
    common = dict(deadline=None, database=None, derandomize=True, phases=None,
                  suppress_health_check=list(HealthCheck))
    from hypothesis import Phase

    common["phases"] = [Phase.explicit, Phase.generate]
    for mode, share in ((GenerationMode.POSITIVE, 0.6), (GenerationMode.NEGATIVE, 0.4)):

        @settings(max_examples=max(1, int(REQUESTS * share)), **common)
        @given(case=schema.as_strategy(mode))
        def run(case):
            nonlocal sent
            real = _retarget(case, rng)
            try:
                response = case.call(base_url=server.url, timeout=120)
            except Exception as exc:  # noqa: BLE001 - a connection failure is the worst finding
                problems.append(f"no answer to {case.method} {case.path}: {exc!r}")
                raise
            sent += 1
            per_operation[f"{case.method} {case.path}"] += 1
            tally[(mode.value, "real" if real else "-", _check(case, response, problems))] += 1

        run()
    elapsed = time.monotonic() - t0
    print(f"\nfuzz: {sent} requests in {elapsed:.0f}s over {len(per_operation)} operations")
    for key, n in sorted(tally.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d}  {' '.join(key)}")
    for op, n in sorted(per_operation.items()):
        print(f"  {n:5d}  {op}")
    assert not problems, "\n".join(problems[:20])
    assert sent >= REQUESTS * 0.9, f"only {sent} requests were sent (wanted {REQUESTS})"
    assert len(per_operation) >= len(operations) - 1, per_operation
    # Still alive and serving.
    assert server.proc.poll() is None, server.output()
    r = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                   json={"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert server.status()["status"] == "ok"
