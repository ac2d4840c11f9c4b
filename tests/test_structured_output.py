"""Structured output and tool calls through llama.cpp's chat handling (hoshikage.chat_format).

Every output is checked the way a client would: parsed with ``json`` and validated against the
schema with ``jsonschema``.
"""
from __future__ import annotations

import json

import jsonschema
import pytest

import hoshikage as hk
from hoshikage.chat_format import ChatFormatError, ChatFormatter, json_schema_grammar
from hoshikage.generation.grammar_sampler import GrammarError

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                           "pets": {"type": "array", "items": {"enum": ["cat", "dog"]},
                                                    "maxItems": 3}},
          "required": ["name", "age", "pets"], "additionalProperties": False}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}


def test_schema_becomes_a_gbnf_grammar():
    grammar = json_schema_grammar(PERSON)
    assert "root ::=" in grammar.text and not grammar.lazy


def test_a_bad_schema_is_a_clear_error_not_an_abort():
    with pytest.raises(ChatFormatError, match="grammar"):
        json_schema_grammar({"$ref": "#/definitions/missing"})
    with pytest.raises(ChatFormatError, match="object"):
        json_schema_grammar(["not", "a", "schema"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_json_always_validates(smollm2, seed):
    out = hk.generate(smollm2, messages=[{"role": "user", "content": "Describe a person as JSON."}],
                      max_tokens=96, temperature=1.0, seed=seed, grammar=json_schema_grammar(PERSON))
    assert out.finish_reason == "stop", out.text  # the grammar ended, so only end-of-generation was left
    jsonschema.validate(json.loads(out.text), PERSON)


def test_greedy_json_object(smollm2):
    out = hk.generate(smollm2, messages=[{"role": "user", "content": "Give me a JSON object with a key 'a'."}],
                      max_tokens=48, temperature=0, grammar=json_schema_grammar({"type": "object"}))
    if out.finish_reason == "stop":
        assert isinstance(json.loads(out.text), dict)
    else:  # a cut answer is reported as such, never silently passed as complete
        assert out.finish_reason == "length" and out.text.startswith("{")


def test_grammar_is_refused_for_a_diffusion_model():
    from hoshikage.testing.diffusion_models import ensure_test_model

    with hk.Model(ensure_test_model("llada-tiny"), vocab_only=True) as llada, pytest.raises(ValueError, match="autoregressive"):
        hk.generate(llada, "x", max_tokens=8, grammar=json_schema_grammar({"type": "object"}))


def test_a_grammar_llama_cpp_cannot_parse_is_a_clear_error(smollm2):
    with pytest.raises(GrammarError, match="refused"):
        hk.generate(smollm2, "x", max_tokens=4, grammar=hk.chat_format.Grammar("root ::= missing_rule"))


@pytest.fixture(scope="module")
def formatter(smollm2):
    fmt = ChatFormatter(smollm2)
    yield fmt
    fmt.close()


def test_required_tool_call_parses_with_valid_arguments(smollm2, formatter):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    plan = formatter.apply(messages, tools=[WEATHER_TOOL], tool_choice="required")
    assert plan.grammar is not None
    prompt = smollm2.tokenize(plan.prompt, add_special=True, parse_special=True)
    out = hk.generate(smollm2, prompt_tokens=prompt, max_tokens=96, temperature=0, grammar=plan.grammar,
                      stop=plan.additional_stops)
    message = formatter.parse(plan, out.text)
    assert len(message.tool_calls) >= 1, (plan.format_name, out.text)
    call = message.tool_calls[0]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_TOOL["function"]["parameters"])


def test_history_with_tool_calls_and_results_renders(formatter):
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'}]
    plan = formatter.apply(messages, tools=[WEATHER_TOOL])
    assert "18" in plan.prompt


def test_tool_choice_is_checked(formatter):
    with pytest.raises(ChatFormatError, match="tool_choice"):
        formatter.apply([{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], tool_choice="always")
