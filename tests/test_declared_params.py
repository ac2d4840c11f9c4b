"""Each sampling and diffusion parameter is declared once (hoshikage/sampling/params.py): the request
schema, the settings, the registry's per-model defaults and the CLI flags carry its name, default,
range and help; a bad value is refused by the schema and by the library, naming the same field."""
from __future__ import annotations

import argparse
import dataclasses

import pytest
from pydantic import ValidationError

from hoshikage.cli.generate import register as register_generate
from hoshikage.cli.param_flags import dest
from hoshikage.cli.server_commands import register as register_server
from hoshikage.errors import ParameterError
from hoshikage.generation.params import SamplingParams
from hoshikage.sampling.params import DIFFUSION_PARAMS, SHARED_PARAMS, DiffusionParams, Schedule
from hoshikage.sampling.schedules import validate_params
from hoshikage.server.errors import from_value_error
from hoshikage.server.schemas import ChatCompletionRequest, DiffusionDefaults
from hoshikage.server.settings import Settings

ALL = (*SHARED_PARAMS, *DIFFUSION_PARAMS)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _constraints(field) -> dict:
    """A pydantic field's ge/gt/le/lt."""
    out = {}
    for item in field.metadata:
        for key in ("ge", "gt", "le", "lt"):
            if getattr(item, key, None) is not None:
                out[key] = getattr(item, key)
    return out


def bad_values(p) -> list:
    """Values just outside the declared range (and, for integers, a fraction)."""
    out = []
    if p.lo is not None:
        out.append(p.lo if p.lo_open else p.lo - (1 if p.kind is int else 1e-6))
    if p.hi is not None:
        out.append(p.hi if p.hi_open else p.hi + (1 if p.kind is int else 1e-6))
    if p.kind is int:
        out.append((p.lo or 0) + 1.5)
    if p.is_enum:
        out.append(max(p.kind) + 1)
    return out


@pytest.mark.parametrize("p", [p for p in ALL if p.request], ids=lambda p: p.name)
def test_request_field_follows_the_declaration(p):
    field = {**ChatCompletionRequest.model_fields}[p.request]
    assert field.default is None and field.description == p.help
    assert _constraints(field) == p.bounds()


@pytest.mark.parametrize("p", [p for p in ALL if p.setting], ids=lambda p: p.name)
def test_setting_follows_the_declaration(p):
    field = Settings.model_fields[p.setting]
    assert field.default == p.server_default and field.description == p.help
    assert _constraints(field) == p.bounds()


@pytest.mark.parametrize("p", DIFFUSION_PARAMS, ids=lambda p: p.name)
def test_registry_defaults_follow_the_declaration(p):
    field = DiffusionDefaults.model_fields[p.name]
    assert field.default is None and _constraints(field) == p.bounds()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register_server(sub)
    register_generate(sub)
    return parser


@pytest.mark.parametrize("p", [p for p in ALL if p.flags], ids=lambda p: p.name)
def test_cli_flags_follow_the_declaration(p):
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = ["add", "generate"] if p in DIFFUSION_PARAMS else ["generate"]
    for command in commands:
        actions = {a.dest: a for a in sub.choices[command]._actions}
        if command == "generate" and p.name == "schedule":
            assert dest(p) not in actions  # llama-diffusion-cli picks it from eps / block length
            continue
        action = actions[dest(p)]
        negated = {"--no-" + f[2:] for f in p.flags if f.startswith("--")} if p.is_bool else set()
        assert set(action.option_strings) == set(p.flags) | negated and p.help in action.help
        assert action.type is (None if p.is_bool else str if p.is_enum else p.kind)
    if p in SHARED_PARAMS and p.name != "seed":  # generate's defaults are the library's (llama.cpp's)
        assert {a.dest: a for a in sub.choices["generate"]._actions}[dest(p)].default == p.default


def test_add_flags_reach_the_registry_defaults():
    args = _parser().parse_args(["add", "x.gguf", "name", "--diffusion-schedule", "block",
                                 "--diffusion-block-length", "16", "--diffusion-eps", "0.01"])
    from hoshikage.cli.param_flags import flag_values
    values = DiffusionDefaults(**flag_values(args, DIFFUSION_PARAMS)).model_dump(exclude_none=True)
    assert values == {"schedule": 1, "block_length": 16, "eps": 0.01}


def _library_check(p, value) -> None:
    """The library's own validator for ``p`` (SamplingParams, or validate_params for diffusion)."""
    if p in SHARED_PARAMS:
        SamplingParams(**{p.name: value})
    else:
        base = DiffusionParams(schedule=p.only_with if p.only_with is not None else Schedule.TIMESTEP_BASED)
        validate_params(dataclasses.replace(base, **{p.name: value}))


CASES = [(p, v) for p in ALL for v in bad_values(p)]


@pytest.mark.parametrize("p,value", CASES, ids=[f"{p.name}={v}" for p, v in CASES])
def test_a_bad_value_is_refused_by_the_schema_and_the_library_naming_the_field(p, value):
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({**CHAT, p.request: value})
    assert info.value.errors()[0]["loc"] == (p.request,)
    with pytest.raises(ValidationError) as info:
        Settings(**{p.setting: value}) if p.setting else ChatCompletionRequest.model_validate({**CHAT, p.request: value})
    assert info.value.errors()[0]["loc"][0] == (p.setting or p.request)
    with pytest.raises(ParameterError) as raised:
        _library_check(p, value)
    assert raised.value.param == p.name and p.name in str(raised.value)
    assert from_value_error(raised.value).param == p.request  # what the server would report


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_the_bounds_themselves_are_accepted_everywhere(p):
    values = [v for v, is_open in ((p.lo, p.lo_open), (p.hi, p.hi_open)) if v is not None and not is_open]
    for value in values:
        ChatCompletionRequest.model_validate({**CHAT, p.request: value})
        _library_check(p, p.kind(value) if p.kind is int else value)


def test_diffusion_eps_zero_is_the_same_422_as_eps_one():
    """The schema allowed 0 (the library refused it with 400); the library's (0, 1) now holds."""
    for eps in (0, 0.0, 1.0):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({**CHAT, "diffusion_eps": eps})
        with pytest.raises(ValidationError):
            Settings(diffusion_eps=eps)
        with pytest.raises(ValidationError):
            DiffusionDefaults(eps=eps)
    validate_params(DiffusionParams(schedule=Schedule.BLOCK_BASED, eps=0.0))  # the library: unused there


def test_library_defaults_come_from_the_declaration():
    assert all(getattr(SamplingParams(), p.name) == p.default for p in SHARED_PARAMS)
    assert all(getattr(DiffusionParams(), p.name) == p.default for p in DIFFUSION_PARAMS)


def test_make_plan_merges_settings_entry_and_request_by_the_declared_names(tmp_path):
    from hoshikage.server.execute import make_plan
    from hoshikage.server.registry import ModelEntry

    settings = Settings(temperature=0.3, diffusion_steps=40, diffusion_eps=0.01)
    entry = ModelEntry(name="m", path=tmp_path / "m.gguf", diffusion={"steps": 12, "block_length": 8})
    req = ChatCompletionRequest.model_validate({**CHAT, "diffusion_block_length": 16, "top_k": 5})
    plan = make_plan(req, entry, settings)
    assert plan.diffusion == {"steps": 12, "algorithm": 4, "schedule": 0, "eps": 0.01, "block_length": 16,
                              "alg_temp": 0.0, "cfg_scale": 0.0, "threshold": 0.0, "factor": 0.0, "cache": None,
                              "cache_refresh": 0}
    assert plan.sampling == {"temperature": 0.3, "top_p": 0.8, "top_k": 5, "repeat_penalty": 1.0,
                             "repeat_last_n": 64}


def test_env_example_shows_each_declared_setting_with_its_default_and_help():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    flat = " ".join(line.removeprefix("# ") for line in text.splitlines())
    for p in (q for q in ALL if q.setting):
        default = int(p.server_default) if isinstance(p.server_default, int) else p.server_default
        assert f"# {p.setting.upper()}={default}\n" in text
        assert f"{p.help} ({p.range_text()})" in flat, p.setting


@pytest.mark.parametrize("text, expected", [("block", 1), ("BLOCK_BASED", 1), ("timestep", 0), ("1", 1), (0, 0)])
def test_an_enum_takes_the_same_names_everywhere(text, expected):
    assert ChatCompletionRequest.model_validate({**CHAT, "diffusion_schedule": text}).diffusion_schedule == expected
    assert Settings(diffusion_schedule=text).diffusion_schedule == expected
    assert DiffusionDefaults(schedule=text).schedule == expected
    for where in (lambda v: ChatCompletionRequest.model_validate({**CHAT, "diffusion_schedule": v}),
                  lambda v: Settings(diffusion_schedule=v), lambda v: DiffusionDefaults(schedule=v)):
        with pytest.raises(ValidationError):
            where("cosine")


def test_generate_reads_the_algorithm_by_the_declared_names():
    from hoshikage.cli.generate import _diffusion_options

    args = _parser().parse_args(["generate", "-m", "x", "-p", "y", "--diffusion-algorithm", "entropy-based",
                                 "--diffusion-eps", "0.01"])
    assert _diffusion_options(args)["algorithm"] == 1
    args.diffusion_algorithm = "FASTEST"
    with pytest.raises(ValueError, match="--diffusion-algorithm"):
        _diffusion_options(args)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1.5, True, "FASTEST", 9])
def test_a_bad_enum_value_is_a_validation_error(value):
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({**CHAT, "diffusion_algorithm": value})
    assert info.value.errors()[0]["loc"] == ("diffusion_algorithm",)
