"""Streamed tool calls (hoshikage.generation.tool_stream): the deltas a client adds up.

Each chunk carries at most one ``delta.tool_calls`` entry per call index, as OpenAI sends them:
LangChain merges entries by index across chunks but not within one, so a call's first piece (id
and name) and its first arguments in two entries of one chunk came out as two broken calls
(found by tests/clients/test_client_langchain.py::test_bind_tools_streamed).
"""
from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest

import hoshikage as hk
from hoshikage.chat_format import ChatFormatter
from hoshikage.generation.tool_stream import ToolCallStream

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def formatter(smollm2):
    fmt = ChatFormatter(smollm2)
    yield fmt
    fmt.close()


def test_one_entry_per_call_per_chunk_and_the_pieces_add_up(smollm2, formatter):
    plan = formatter.apply([{"role": "user", "content": "What is the weather in Paris?"}],
                           tools=[WEATHER_TOOL], tool_choice="required")
    prompt = smollm2.tokenize(plan.prompt, add_special=True, parse_special=True)
    stream = ToolCallStream(plan)
    pieces, out = [], None
    for chunk in hk.generate(smollm2, prompt_tokens=prompt, max_tokens=96, temperature=0, grammar=plan.grammar,
                             stop=plan.additional_stops, n_threads=1, stream=True):
        if chunk.text:  # piece by piece, as the server streams them
            pieces.append(stream.push(chunk.text))
        out = chunk.completion or out
    final = formatter.parse(plan, out.text)
    done, content, last = stream.finish(replace(out, tool_calls=tuple(final.tool_calls)))
    pieces.append((content, last))
    calls: dict[int, dict] = {}
    for _, deltas in pieces:
        indices = [d["index"] for d in deltas]
        assert len(indices) == len(set(indices)), deltas
        for d in deltas:
            call = calls.setdefault(d["index"], {"id": d.get("id"), "name": "", "arguments": ""})
            assert ("id" in d) == (call["arguments"] == "" and call["name"] == ""), d  # id, name first
            call["name"] += d["function"].get("name", "")
            call["arguments"] += d["function"]["arguments"]
    assert calls and calls[0]["name"] == "get_weather", (out.text, calls)
    assert [c["arguments"] for c in calls.values()] == [c.arguments for c in final.tool_calls]
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER_TOOL["function"]["parameters"])
    assert [c.id for c in done.tool_calls] == [c["id"] for c in calls.values()]
