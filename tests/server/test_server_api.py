"""The OpenAI-compatible API against a live server, through the real openai SDK (and raw httpx
where the SSE bytes matter): both kinds of model, streamed and not, side by side."""
from __future__ import annotations

import re
import shutil

import httpx
import openai
import pytest

CHAT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def server(make_server):
    return make_server({"DIFFUSION_MEMORY_BUDGET_MB": "300"})


def ext(obj) -> dict:
    """Hoshikage's extension block of an SDK response object."""
    return obj.model_extra["hoshikage"]


# -- autoregressive ---------------------------------------------------------------------------

def test_chat_autoregressive(server):
    r = server.openai().chat.completions.create(model="smollm2", messages=CHAT, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8 and r.usage.prompt_tokens > 0
    assert ext(r)["kind"] == "autoregressive"


def test_chat_autoregressive_stream_matches_non_stream(server):
    client = server.openai()
    full = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1, "autoregressive streaming sends token deltas"
    assert "".join(deltas) == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completions_autoregressive(server):
    client = server.openai()
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=6, temperature=0, stream=True))
    assert streamed == r.choices[0].text


def test_stop_words_are_honoured(server):
    client = server.openai()
    full = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    text = full.choices[0].text
    cut = text.strip()[:2] or text[:1]
    stopped = client.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0,
                                        stop=[cut])
    assert cut not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


# -- diffusion: same requests, the model's kind decides ------------------------------------------

def test_chat_diffusion_with_extra_body(server):
    r = server.openai().chat.completions.create(
        model="dream", messages=CHAT, max_tokens=16, temperature=0,
        extra_body={"diffusion_steps": 5, "diffusion_algorithm": "ENTROPY_BASED", "seed": 7,
                    "diffusion_eps": 0.01})
    h = ext(r)
    assert h["kind"] == "diffusion"
    assert h["params"]["steps"] == 5 and h["params"]["algorithm"] == "ENTROPY_BASED"
    assert h["params"]["eps"] == 0.01 and h["params"]["seed"] == 7
    assert h["timings"]["steps"] == 5
    assert h["test_model"] is True
    assert r.usage.completion_tokens <= 16
    assert r.choices[0].finish_reason in ("stop", "length")


def test_diffusion_algorithm_as_number_and_seed_is_deterministic(server):
    client = server.openai()
    kw = dict(model="dream", messages=CHAT, max_tokens=12, temperature=0.7,
              extra_body={"diffusion_steps": 4, "diffusion_algorithm": 3, "seed": 11})
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert ext(a)["params"]["algorithm"] == "RANDOM"
    assert a.choices[0].message.content == b.choices[0].message.content


def test_request_timeout_scales_with_diffusion_steps(server):
    client = server.openai()
    ar = client.completions.create(model="smollm2", prompt="Hi", max_tokens=2)
    assert ext(ar)["timeout_s"] == 300  # REQUEST_TIMEOUT
    few = client.completions.create(model="dream", prompt="Hi", max_tokens=4, extra_body={"diffusion_steps": 10})
    assert ext(few)["timeout_s"] == 300  # never below REQUEST_TIMEOUT
    many = client.completions.create(model="dream", prompt="Hi", max_tokens=4, extra_body={"diffusion_steps": 100})
    assert ext(many)["timeout_s"] == 600  # REQUEST_TIMEOUT * 100 / DIFFUSION_STEPS (50)


def test_diffusion_stream_is_one_content_chunk(server):
    chunks = list(server.openai().chat.completions.create(
        model="dream", messages=CHAT, max_tokens=12, stream=True, extra_body={"diffusion_steps": 4}))
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content is not None]
    assert len(contents) == 1, "pseudo-streaming: one content chunk"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_diffusion_completions(server):
    r = server.openai().completions.create(model="dream", prompt="Once upon a time", max_tokens=10,
                                           extra_body={"diffusion_steps": 3})
    assert ext(r)["kind"] == "diffusion" and r.usage.completion_tokens <= 10


def test_progress_comments_in_raw_sse(server):
    body = {"model": "dream", "messages": CHAT, "max_tokens": 12, "stream": True, "diffusion_steps": 6}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    progress = [line for line in lines if line.startswith(": diffusion step")]
    assert progress == [f": diffusion step {i}/6" for i in range(1, 7)]
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and len(data) == 2
    assert lines.index(progress[-1]) < lines.index(data[0]), "progress comes before the answer"


def test_block_schedule_adjustment_is_reported(server):
    # llada's registry defaults: block schedule, block_length 8, 6 steps. A canvas of
    # prompt + 20 tokens is not a multiple of 8 and 6 steps do not divide into its blocks:
    # the server adjusts and says which values it used.
    r = server.openai().chat.completions.create(model="llada", messages=CHAT, max_tokens=20)
    h = ext(r)
    assert h["kind"] == "diffusion" and h["params"]["schedule"] == "BLOCK_BASED"
    canvas, steps = h["params"]["canvas_length"], h["params"]["steps"]
    assert canvas % 8 == 0 and steps % (canvas // 8) == 0
    assert h["notes"], "the adjustment is described"


def test_prefix_cache_through_the_server(server):
    """diffusion_cache=prefix: served (its twin context counted in the memory estimate), and refused
    under the request field for the timestep schedule (dream's registry default)."""
    client = server.openai()
    body = {"model": "llada", "messages": CHAT, "max_tokens": 20, "temperature": 0}
    plain = ext(client.chat.completions.create(**body))
    cached = ext(client.chat.completions.create(**body, extra_body={"diffusion_cache": "prefix"}))
    assert cached["params"]["cache"] == "prefix" and plain["params"]["cache"] is None
    assert cached["memory_estimate_mb"] > plain["memory_estimate_mb"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="dream", messages=CHAT, max_tokens=8,
                                       extra_body={"diffusion_cache": "prefix"})
    assert info.value.body["param"] == "diffusion_cache" and "block schedule" in info.value.body["message"]


def test_stream_blocks_opt_in_sends_settled_text_as_deltas(server):
    chunks = list(server.openai().chat.completions.create(
        model="llada", messages=CHAT, max_tokens=40, stream=True, temperature=0,
        extra_body={"diffusion_stream_blocks": True, "diffusion_steps": 20, "diffusion_block_length": 8}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = server.openai().chat.completions.create(
        model="llada", messages=CHAT, max_tokens=40, temperature=0,
        extra_body={"diffusion_steps": 20, "diffusion_block_length": 8})
    assert text == final.choices[0].message.content
    contents = [c for c in chunks if c.choices and c.choices[0].delta.content]
    if len(final.choices[0].message.content) > 8:
        assert len(contents) > 1, "finished blocks arrive before the end"


# -- both kinds in one server ------------------------------------------------------------------

def test_alternating_models_switch_and_unload(server):
    client = server.openai()
    before = server.status()
    for model in ("smollm2", "dream", "smollm2", "llada", "smollm2"):
        r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=6, temperature=0,
                                           extra_body={"diffusion_steps": 3})
        assert ext(r)["kind"] == ("autoregressive" if model == "smollm2" else "diffusion")
        status = server.status()
        assert status["loaded_model"] == model
        assert status["kind"] == ext(r)["kind"]
    after = server.status()
    assert after["unloads"] - before["unloads"] >= 4, "switching models unloads the previous one"


def test_models_list_labels_kinds_and_test_models(server):
    cards = {m.id: m for m in server.openai().models.list().data}
    assert {"smollm2", "llada", "dream"} <= set(cards)
    assert cards["smollm2"].model_extra["kind"] == "autoregressive"
    assert cards["dream"].model_extra["kind"] == "diffusion"
    assert cards["dream"].model_extra["test_model"] is True
    assert cards["smollm2"].model_extra["test_model"] is False


def test_status_and_version(server):
    status = server.status()
    assert status["status"] == "ok" and status["uptime_s"] >= 0
    assert {"waiting", "running", "max_queue"} <= set(status["queue"])
    assert "rss_mb" in status["memory"]
    assert httpx.get(server.base_url + "/api/version").json()["version"]
    assert httpx.get(server.url + "/openapi.json").json()["info"]["title"] == "Hoshikage"


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("diffusion_steps", 0), ("diffusion_algorithm", "FASTEST"), ("diffusion_algorithm", 9),
    ("diffusion_schedule", "zigzag"), ("diffusion_eps", 1.5), ("diffusion_block_length", -4),
    ("diffusion_cfg_scale", -1), ("diffusion_alg_temp", "warm"), ("diffusion_stepz", 3),
    ("diffusion_threshold", 1.5), ("diffusion_factor", -1), ("diffusion_early_stop", "maybe"),
])
def test_bad_diffusion_parameter_names_the_field(server, field, value):
    with pytest.raises(openai.UnprocessableEntityError) as info:
        server.openai().chat.completions.create(model="dream", messages=CHAT, max_tokens=4,
                                                extra_body={field: value})
    err = info.value.body
    assert err["code"] == "validation_error" and err["type"] == "invalid_request_error"
    assert err["param"] == field or field in err["message"]
    assert field in err["message"]


def test_diffusion_reports_forwards_and_takes_threshold_factor_and_early_stop(server):
    client = server.openai()
    body = {"diffusion_steps": 8, "diffusion_block_length": 8, "diffusion_schedule": "block"}
    for extra in ({}, {"diffusion_threshold": 0.5}, {"diffusion_factor": 1.0, "diffusion_early_stop": False}):
        h = ext(client.chat.completions.create(model="llada", messages=CHAT, max_tokens=16, temperature=0,
                                               extra_body={**body, **extra}))
        assert h["forwards"] == h["timings"]["steps"] <= h["params"]["steps"]  # no CFG: one pass a step
        assert h["params"]["early_stop"] is extra.get("diffusion_early_stop", True)  # on by default
        assert h["params"]["threshold"] == extra.get("diffusion_threshold", 0.0)
    for extra, field in (({"diffusion_threshold": 0.9, "diffusion_factor": 1.0}, "diffusion_factor"),
                         ({"diffusion_threshold": 0.9, "diffusion_algorithm": "RANDOM"}, "diffusion_threshold")):
        r = server.post("/v1/chat/completions", {"model": "llada", "messages": CHAT, "max_tokens": 8, **body, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_unknown_model_is_404_even_when_streaming(server):
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as info:
            r = server.openai().chat.completions.create(model="nope", messages=CHAT, stream=stream)
            list(r)
        assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"


def test_bad_common_fields_are_422(server):
    r = server.post("/v1/chat/completions", {"model": "smollm2", "messages": CHAT, "temperature": -1})
    assert r.status_code == 422 and r.json()["error"]["param"] == "temperature"
    r = server.post("/v1/chat/completions", {"model": "smollm2", "messages": []})
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages"
    r = server.post("/v1/completions", {"model": "smollm2"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"


def test_prompt_too_long_for_the_context_is_400(server):
    r = server.post("/v1/completions", {"model": "smollm2", "prompt": "word " * 5000, "max_tokens": 4})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "validation_error" and r.json()["error"]["param"] == "prompt"


def test_diffusion_request_over_the_memory_budget_is_refused(server):
    # dream-tiny's vocabulary is 49k: a 2,000-token canvas needs ~380 MiB of logits alone.
    r = server.post("/v1/chat/completions", {"model": "dream", "messages": CHAT, "max_tokens": 2000})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "memory_budget_exceeded" and err["param"] == "max_tokens"
    assert "DIFFUSION_MEMORY_BUDGET_MB=300" in err["message"] and "logits" in err["message"]


# -- registry changes while the server runs ----------------------------------------------------------

def test_admin_add_and_remove_take_effect_immediately(server, model_paths):
    r = server.post("/admin/models", {"name": "dream-2", "path": str(model_paths["dream"]), "stop": ["zz"],
                                      "test_model": True, "diffusion": {"steps": 3, "algorithm": "MARGIN_BASED"}})
    assert r.status_code == 200, r.text
    out = server.openai().chat.completions.create(model="dream-2", messages=CHAT, max_tokens=6)
    assert ext(out)["params"]["algorithm"] == "MARGIN_BASED" and ext(out)["params"]["steps"] == 3
    assert "zz" in ext(out)["params"]["stop"]
    r = httpx.delete(server.url + "/admin/models/dream-2")
    assert r.status_code == 200
    with pytest.raises(openai.NotFoundError):
        server.openai().chat.completions.create(model="dream-2", messages=CHAT, max_tokens=6)
    assert httpx.delete(server.url + "/admin/models/dream-2").status_code == 404
    bad = server.post("/admin/models", {"name": "x", "path": str(server.home / "missing.gguf")})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "path"


def test_cli_add_rm_list_while_running(server, model_paths):
    done = server.cli("add", str(model_paths["smollm2"]), "smol-cli", "STOP1", "STOP2")
    assert done.returncode == 0, done.stderr
    assert "smol-cli" in {m.id for m in server.openai().models.list().data}
    listed = server.cli("list")
    assert "smol-cli" in listed.stdout and "autoregressive" in listed.stdout
    assert "TEST MODEL" in listed.stdout  # llada and dream are labelled
    r = server.openai().completions.create(model="smol-cli", prompt="Hi", max_tokens=3)
    assert {"STOP1", "STOP2"} <= set(ext(r)["params"]["stop"])
    assert server.cli("rm", "smol-cli").returncode == 0
    assert "smol-cli" not in {m.id for m in server.openai().models.list().data}
    assert server.cli("rm", "smol-cli").returncode == 1


def test_gguf_dropped_into_models_dir_is_served(server, model_paths):
    models = server.home / "models"
    models.mkdir(exist_ok=True)
    shutil.copyfile(model_paths["dream"], models / "dropped.gguf")  # a copy: a link to a registered file is skipped
    r = server.openai().chat.completions.create(model="dropped", messages=CHAT, max_tokens=4,
                                                extra_body={"diffusion_steps": 2})
    assert ext(r)["kind"] == "diffusion"


def test_one_log_line_per_request(server):
    server.openai().completions.create(model="smollm2", prompt="Hello", max_tokens=3)
    lines = [line for line in server.log_lines() if "hoshikage.server.requests" in line]
    assert lines, server.output()
    last_ar = [line for line in lines if "model=smollm2" in line][-1]
    assert re.search(r"kind=autoregressive prompt_tokens=\d+ completion_tokens=\d+ steps=0 time=[\d.]+s "
                     r"tokens/s=[\d.]+", last_ar)
    assert any(re.search(r"model=dream kind=diffusion .* steps=[1-9]", line) for line in lines)
