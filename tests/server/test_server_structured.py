"""Structured output, tool calls and log probabilities against a live server, through the openai SDK as clients
send them: ``response_format`` (json_object, json_schema, the SDK's ``parse`` with a pydantic
model), ``tools`` with every ``tool_choice``, streamed ``delta.tool_calls``, tool results in the
history; diffusion models and unimplemented fields refused naming the field."""
from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from pydantic import BaseModel

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class City(BaseModel):
    name: str
    country: str
    population: int


@pytest.fixture(scope="module")
def server(make_server):
    return make_server({"N_CTX": "1024", "REQUEST_TIMEOUT": "120", "MAX_TOKENS": "96"})


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


def refused(r: httpx.Response, param: str, status: int = 400) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["param"] == param, err
    return err


@pytest.mark.parametrize("seed", [1, 2])
def test_json_schema_answers_always_validate(client, seed):
    schema = City.model_json_schema()
    r = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Describe a city."}], temperature=1.0, seed=seed,
        max_tokens=96, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_sdk_parse_with_a_pydantic_model(client):
    r = client.chat.completions.parse(model="smollm2", messages=[{"role": "user", "content": "Describe Paris."}],
                                      response_format=City, temperature=0, max_tokens=96)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City), r.choices[0].message.content


def test_json_object(client):
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Reply in JSON."}],
                                       response_format={"type": "json_object"}, temperature=0, max_tokens=64)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # cut at max_tokens: said so, not passed off as complete
        assert r.choices[0].finish_reason == "length"


def test_required_tool_call(client):
    r = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER, TIME],
                                       tool_choice="required", temperature=0, max_tokens=96)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].type == "function" and calls[0].id.startswith("call_")
    tool = {"get_weather": WEATHER, "get_time": TIME}[calls[0].function.name]
    jsonschema.validate(json.loads(calls[0].function.arguments), tool["function"]["parameters"])


def test_named_function_and_one_call(client):
    r = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       parallel_tool_calls=False, temperature=0, max_tokens=96)
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    jsonschema.validate(json.loads(calls[0].function.arguments), TIME["function"]["parameters"])


def test_tool_choice_none_answers_in_text(client):
    r = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="none",
                                       temperature=0, max_tokens=32)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


def test_streamed_tool_call_deltas_add_up(client):
    stream = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required",
                                            parallel_tool_calls=False, temperature=0, max_tokens=96, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            if piece.function is not None:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


def test_tool_results_in_the_history(client):
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'}]
    r = client.chat.completions.create(model="smollm2", messages=history, tools=[WEATHER], temperature=0,
                                       max_tokens=32)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.usage.prompt_tokens > 60  # the tool definitions and the result reached the prompt


def test_diffusion_models_refuse_both_naming_the_field(server):
    body = {"model": "llada", "messages": ASK, "max_tokens": 16}
    refused(server.post("/v1/chat/completions", {**body, "response_format": {"type": "json_object"}}),
            "response_format")
    refused(server.post("/v1/chat/completions", {**body, "tools": [WEATHER]}), "tools")


@pytest.mark.parametrize("field,value", [("top_logprobs", 2), ("logit_bias", {"1": 5}),
                                         ("functions", [WEATHER["function"]])])
def test_unimplemented_fields_are_refused_not_ignored(server, field, value):
    body = {"model": "smollm2", "messages": ASK, "max_tokens": 4, field: value}
    refused(server.post("/v1/chat/completions", body), field)


def test_bad_tool_requests_name_their_field(server):
    body = {"model": "smollm2", "messages": ASK, "max_tokens": 4}
    refused(server.post("/v1/chat/completions", {**body, "tools": [WEATHER], "tool_choice": {
        "type": "function", "function": {"name": "nope"}}}), "tool_choice")
    refused(server.post("/v1/chat/completions", {**body, "tool_choice": "required"}), "tool_choice")
    r = server.post("/v1/chat/completions", {**body, "response_format": {"type": "json_schema"}})
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("response_format"), r.text
    assert server.post("/v1/completions", {"model": "smollm2", "prompt": "x", "max_tokens": 2,
                                           "echo": True}).json()["error"]["param"] == "echo"


def test_chat_logprobs_in_openai_shape(client):
    r = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the likeliest token was chosen
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token


def test_streamed_logprobs_add_up_to_the_answer(client):
    stream = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, temperature=0,
                                            logprobs=True, stream=True, stream_options={"include_usage": True})
    text, tokens, usage = "", [], None
    for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].logprobs is not None:
                tokens += chunk.choices[0].logprobs.content or []
    assert len(tokens) == usage.completion_tokens and "".join(t.token for t in tokens).startswith(text[:1])


def test_completions_logprobs(client):
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4,
                                  temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert lp.text_offset[0] == 0 and all(len(alts) == 2 for alts in lp.top_logprobs)


def test_logprobs_are_refused_for_diffusion_models(server):
    refused(server.post("/v1/chat/completions", {"model": "llada", "messages": ASK, "max_tokens": 8,
                                                 "logprobs": True}), "logprobs")
