"""Unit tests of the request-side rules (docs/reliability.md section 8, rows 1, 4, 6, 13): lone
surrogates, the model-name rule, the registry's tolerance of bad entries, one-line logs, the
look-back bound and the diffusion step ceiling. No native library, no server process."""
from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from hoshikage.server.errors import APIError
from hoshikage.server.execute import Runner, check_look_back
from hoshikage.server.logs import FORMAT, OneLineFormatter
from hoshikage.server.registry import ModelEntry, Registry
from hoshikage.server.schemas import AddModelRequest, ChatCompletionRequest, CompletionRequest
from hoshikage.server.settings import Settings
from hoshikage.server.text_rules import model_name_problem, shown, surrogate_problem


def test_surrogate_problem_finds_lone_surrogates_anywhere():
    assert surrogate_problem("fine \U0001F600") is None
    assert surrogate_problem({"a": ["ok", {"b": "x\ud800"}]}) == ("['a'][1]['b']: a lone surrogate (U+D800) at "
                                                                  "character 1; text must be valid Unicode")
    assert surrogate_problem({"\udfff": 1}) is not None  # keys too


@pytest.mark.parametrize("body,loc", [
    ({"messages": [{"role": "user", "content": "\ud800"}]}, ("messages", 0, "content")),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}, ("messages", 0, "content")),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": ["\ud800"]}, ("stop",)),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "m\udc00"}, ("model",)),
])
def test_request_bodies_refuse_lone_surrogates_naming_the_field(body, loc):
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"model": "m", **body})
    assert info.value.errors()[0]["loc"] == loc
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "\ud800"})


@pytest.mark.parametrize("name,ok", [
    ("smollm2", True), ("Llama 3.2 3B (Q4_K_M)", True), ("日本語モデル", True), ("x" * 128, True),
    ("x\n2026 INFO forged", False), ("\x1b[31m", False), ("a\u202eb", False), ("a\u2028b", False),
    ("nbsp\u00a0name", False), ("a\ud800", False), ("", False), ("x" * 129, False), (" a", False), ("a/b", False),
])
def test_model_name_rule(name, ok):
    assert (model_name_problem(name) is None) == ok
    if ok:
        AddModelRequest(name=name, path="/m.gguf")
    else:
        with pytest.raises(ValidationError) as info:
            AddModelRequest(name=name, path="/m.gguf")
        assert info.value.errors()[0]["loc"] == ("name",)


def test_shown_escapes_what_a_terminal_would_obey():
    assert shown("plain 日本") == "plain 日本"
    assert shown("x\n2026 INFO forged\x1b[2J\u202e\ud800") == "x\\n2026 INFO forged\\x1b[2J\\u202e\\ud800"


def test_log_records_stay_on_one_line():
    record = logging.LogRecord("hoshikage.server", logging.INFO, __file__, 1, "loaded %s", ("x\n2026 INFO forged",),
                               None)
    line = OneLineFormatter(FORMAT).format(record)
    assert "\n" not in line and line.endswith("loaded x\\n2026 INFO forged")


def test_registry_skips_bad_entries_and_keeps_them_in_the_file(tmp_path, caplog):
    raw = {"good": {"path": str(tmp_path / "good.gguf")},
           "x\n2026 INFO forged": {"path": str(tmp_path / "a.gguf")},
           "bad-description": {"path": str(tmp_path / "b.gguf"), "description": "\ud800"},
           "no-path": {}}
    (tmp_path / "model_map.json").write_text(json.dumps(raw))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "found\x07.gguf").write_bytes(b"GGUF")
    reg = Registry(tmp_path)
    with caplog.at_level(logging.WARNING, "hoshikage.server"):
        assert set(reg.entries()) == {"good"}
    assert len([r for r in caplog.records if "skipped" in r.getMessage() or "not served" in r.getMessage()]) == 4
    reg.add(ModelEntry(name="new", path=tmp_path / "new.gguf"))  # the file keeps what the reader skipped
    after = json.loads((tmp_path / "model_map.json").read_text(encoding="utf-8"))
    assert set(after) == set(raw) | {"new"} and after["bad-description"]["description"] == "\ud800"
    assert set(reg.entries()) == {"good", "new"}
    with pytest.raises(ValueError, match="printable"):
        reg.add(ModelEntry(name="a\nb", path=tmp_path / "x.gguf"))
    (tmp_path / "model_map.json").write_bytes(b'{"a": {"path": "\xff"}}')  # not UTF-8: keep the last good
    assert set(reg.entries()) == {"good", "new"}


def test_default_stop_with_undecodable_bytes_is_a_bad_setting():
    with pytest.raises(ValidationError, match="DEFAULT_STOP"):
        Settings(default_stop=["ok", "\udcff"])


def test_a_default_look_back_past_n_ctx_is_a_bad_setting():
    with pytest.raises(ValidationError, match="REPEAT_LAST_N=64 looks back further than N_CTX=32"):
        Settings(n_ctx=32)
    assert Settings(n_ctx=32, repeat_last_n=-1).repeat_last_n == -1


def test_look_back_past_the_context_is_refused():
    check_look_back(-1, 256)
    check_look_back(256, 256)
    with pytest.raises(APIError) as info:
        check_look_back(2**31 - 1, 256)
    assert info.value.param == "repeat_last_n" and info.value.status == 400


def test_diffusion_step_ceiling_and_timeout_cap():
    runner = Runner(Settings(request_timeout=20, diffusion_steps=50, max_diffusion_steps=64,
                             diffusion_timeout_cap=22), residency=None, counters={})
    assert runner._diffusion_timeout(4, 256) == 20  # never below REQUEST_TIMEOUT
    assert runner._diffusion_timeout(55, 256) == 22  # 20 x 55 / 50 = 22
    assert runner._diffusion_timeout(64, 256) == 22  # 25.6, cut to the cap
    for steps, words in ((65, "MAX_DIFFUSION_STEPS=64"), (4096, "positions a canvas can have")):
        with pytest.raises(APIError, match=words) as info:
            runner._diffusion_timeout(steps, 256)
        assert info.value.param == "diffusion_steps" and info.value.status == 400
