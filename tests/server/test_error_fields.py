"""The server reports a library ParameterError under the request field it came from."""
from __future__ import annotations

import dataclasses

import pytest

from hoshikage.errors import ParameterError
from hoshikage.sampling import DiffusionParams
from hoshikage.server.errors import from_value_error, request_field
from hoshikage.server.schemas import ChatCompletionRequest, CompletionRequest


@pytest.mark.parametrize("library, field", [
    ("steps", "diffusion_steps"), ("block_length", "diffusion_block_length"), ("eps", "diffusion_eps"),
    ("alg_temp", "diffusion_alg_temp"), ("cfg_scale", "diffusion_cfg_scale"), ("algorithm", "diffusion_algorithm"),
    ("schedule", "diffusion_schedule"), ("temperature", "temperature"), ("top_k", "top_k"), ("seed", "seed"),
    ("max_tokens", "max_tokens"), ("messages", "messages"), ("prompt", "prompt"), ("tool_choice", "tool_choice"),
    ("response_format", "response_format"), ("messages.0.content", "messages.0.content"),
])
def test_a_parameter_error_is_reported_under_its_request_field(library, field):
    err = from_value_error(ParameterError(f"{library} is wrong", library))
    assert (err.param, err.status, err.code) == (field, 400, "validation_error")
    assert err.message == f"{library} is wrong"


def test_every_diffusion_request_field_is_reached_from_its_library_name():
    requests = {*ChatCompletionRequest.model_fields, *CompletionRequest.model_fields}
    for f in dataclasses.fields(DiffusionParams):
        expected = f"diffusion_{f.name}" if f"diffusion_{f.name}" in requests else f.name
        if expected in requests:
            assert request_field(f.name) == expected, f.name


def test_library_only_names_and_plain_value_errors():
    assert request_field("canvas_length") is None  # a run_diffusion argument, no request field
    assert from_value_error(ParameterError("canvas_length is wrong", "canvas_length")).param is None
    # no guessing from the words of a message: a plain ValueError names what the caller was checking
    assert from_value_error(ValueError("temperature? steps?")).param is None
    assert from_value_error(ValueError("the template failed"), "messages").param == "messages"
