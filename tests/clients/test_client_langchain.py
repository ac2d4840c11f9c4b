"""LangChain (``langchain-openai``) against a live server: ``ChatOpenAI`` chat and streaming,
``with_structured_output`` (its default method, json_schema), ``bind_tools`` with ``tool_choice``
required and named, and ``OpenAIEmbeddings``. SmolLM2-135M is weak: the tests check shape and
validity (JSON that parses and validates, tool names and arguments valid for their schema), not
what the answers say."""
from __future__ import annotations

import jsonschema
import numpy as np
import pytest
from pydantic import BaseModel, Field

import hoshikage as hk

langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is in the `test` extra")


class City(BaseModel):
    """A city."""

    name: str
    country: str
    population: int


class GetWeather(BaseModel):
    """Current weather of a city."""

    city: str = Field(max_length=40)
    unit: str = Field(json_schema_extra={"enum": ["celsius", "fahrenheit"]})


class GetTime(BaseModel):
    """Current time in a city."""

    city: str = Field(max_length=40)


SCHEMAS = {"GetWeather": GetWeather.model_json_schema(), "GetTime": GetTime.model_json_schema()}
ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def chat(server):
    return langchain_openai.ChatOpenAI(base_url=server.base_url, api_key="unused", model="smollm2",
                                       temperature=0, max_tokens=96, max_retries=0, timeout=120)


def test_chat_and_stream(chat):
    reply = chat.invoke("Say hello.")
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.usage_metadata["input_tokens"] > 0 and reply.usage_metadata["output_tokens"] > 0
    pieces = [chunk.content for chunk in chat.stream("Count to five.")]
    assert len(pieces) > 1 and "".join(pieces)


def test_with_structured_output_json_schema(chat):
    """The default method is json_schema: the answer parses into the pydantic model."""
    structured = chat.with_structured_output(City, include_raw=True)
    out = structured.invoke("Describe Paris.")
    assert out["parsing_error"] is None, out["raw"].content
    assert isinstance(out["parsed"], City)
    raw = out["raw"]
    assert raw.response_metadata["finish_reason"] == "stop", raw.content


def test_with_structured_output_json_mode(chat):
    structured = chat.with_structured_output(City.model_json_schema(), method="json_mode")
    out = structured.invoke("Describe Paris as a JSON object with name, country and population.")
    assert isinstance(out, dict)


@pytest.mark.parametrize("tool_choice", ["required", "any", "GetTime"])
def test_bind_tools_with_a_required_or_named_tool(chat, tool_choice):
    bound = chat.bind_tools([GetWeather, GetTime], tool_choice=tool_choice, parallel_tool_calls=False)
    reply = bound.invoke(ASK)
    assert reply.response_metadata["finish_reason"] == "tool_calls", reply
    assert not reply.invalid_tool_calls, reply.invalid_tool_calls
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    if tool_choice == "GetTime":
        assert call["name"] == "GetTime"
    assert call["name"] in SCHEMAS and call["id"]
    jsonschema.validate(call["args"], SCHEMAS[call["name"]])


def test_bind_tools_streamed(chat):
    bound = chat.bind_tools([GetWeather], tool_choice="GetWeather")
    total = None
    for chunk in bound.stream(ASK):
        total = chunk if total is None else total + chunk
    assert total.tool_calls and total.tool_calls[0]["name"] == "GetWeather", total
    jsonschema.validate(total.tool_calls[0]["args"], SCHEMAS["GetWeather"])


def test_tool_result_in_the_history(chat):
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    history = [HumanMessage(ASK),
               AIMessage("", tool_calls=[{"name": "GetWeather", "args": {"city": "Paris", "unit": "celsius"},
                                          "id": "call_1"}]),
               ToolMessage('{"temperature": 18}', tool_call_id="call_1")]
    reply = chat.bind_tools([GetWeather]).invoke(history)
    assert reply.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")


def test_embeddings_send_text_with_check_embedding_ctx_length_off(server, smollm2):
    """``check_embedding_ctx_length=False``: LangChain sends the text, the server tokenizes it."""
    emb = langchain_openai.OpenAIEmbeddings(base_url=server.base_url, api_key="unused", model="smollm2",
                                            check_embedding_ctx_length=False, max_retries=0)
    texts = ["Hello world", "The sky is blue."]
    got = np.array(emb.embed_documents(texts), dtype=np.float32)
    np.testing.assert_allclose(got, hk.embed(smollm2, texts, n_threads=1), atol=1e-5)
    np.testing.assert_allclose(np.array(emb.embed_query(texts[0])), got[0], atol=1e-6)


def test_embeddings_default_needs_tiktoken_which_is_offline(server, offline_message):
    """By default LangChain tokenizes with tiktoken (cl100k_base ids, not SmolLM2's), which
    downloads its encoding on first use: here that fails at once, saying why (docs/server.md)."""
    emb = langchain_openai.OpenAIEmbeddings(base_url=server.base_url, api_key="unused", model="smollm2",
                                            max_retries=0)
    with pytest.raises(Exception) as info:
        emb.embed_documents(["Hello world"])
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any(offline_message in text for text in chain), chain


def test_logprobs_reach_response_metadata(server):
    """``ChatOpenAI(logprobs=True)`` gets one entry per answer token in response_metadata."""
    chat = langchain_openai.ChatOpenAI(base_url=server.base_url, api_key="unused", model="smollm2",
                                       max_tokens=6, max_retries=0, temperature=0, logprobs=True)
    reply = chat.invoke("Hi")
    content = reply.response_metadata["logprobs"]["content"]
    assert content and all(entry["logprob"] <= 0 for entry in content)
    assert "".join(entry["token"] for entry in content).strip() == reply.content.strip()

