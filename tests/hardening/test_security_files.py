"""Security, round two: what a model file or a path can do (docs/reliability.md section 8, rows
3, 5, 9, 10, 11 and the deadlines of 13).

Each live test sends the attack to ``hoshikage serve`` on 127.0.0.1 and checks three things: a
clear error in the error shape (4xx, or ``model_load_failed`` for a bad model file, as for the
files of test_bad_models.py), the server still answering a normal request to another model, and
the registry (``model_map.json``) unchanged. The unit tests below them cover the bounded chat
template renderer and the header parser without a server.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import threading
from pathlib import Path

import httpx
import pytest
from conftest import FAST_ENV, LiveServer, write_registry
from gguf_craft import layout

from hoshikage.chat_template import (ChatMessage, RenderStopped, TemplateBoundError,
                                     render_jinja_chat_template)
from hoshikage.gguf_file import GGUFFormatError, NotRegularFileError, read_architecture, read_header

LOOP_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
BLOAT_TEMPLATE = "{{ 'x' * 10**10 }}"
# Fine for a short message (the probe's), quadratic in the length of a long one.
QUADRATIC_TEMPLATE = ("{% for m in messages %}{% for a in m.content %}{% for b in m.content %}{% endfor %}"
                      "{% endfor %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                      "<|im_start|>assistant\n")


# -- crafting GGUF files ----------------------------------------------------------------------------

def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, value: object) -> bytes:
    """One metadata entry: a str (type 8), a bool (7) or an int (u32, 4)."""
    if isinstance(value, str):
        return _string(key) + struct.pack("<I", 8) + _string(value)
    if isinstance(value, bool):
        return _string(key) + struct.pack("<I?", 7, value)
    return _string(key) + struct.pack("<II", 4, value)


def with_metadata(good: Path, out: Path, changes: dict[str, object], first: bytes = b"") -> Path:
    """``good`` with metadata values replaced (or added), and raw entries ``first`` put before
    the others; the tensor table and data are copied, realigned."""
    lay = layout(good)
    data = good.read_bytes()
    keys = list(lay.kv)
    starts = [lay.kv[k].value_offset - 4 - 8 - len(k.encode()) for k in keys]
    ends = starts[1:] + [lay.tensors[0].offset]
    entries = [_kv(k, changes[k]) if k in changes else data[s:e] for k, s, e in zip(keys, starts, ends)]
    entries += [_kv(k, v) for k, v in changes.items() if k not in lay.kv]
    n_first = 1 if first else 0
    align = int(lay.kv["general.alignment"].value) if "general.alignment" in lay.kv else 32
    old_data = -(-lay.info_end // align) * align
    head = struct.pack("<4sIQQ", b"GGUF", lay.version, lay.n_tensors, len(entries) + n_first)
    body = head + first + b"".join(entries) + data[lay.tensors[0].offset:lay.info_end]
    body += b"\x00" * (-len(body) % align)
    out.write_bytes(body + data[old_data:])
    return out


def string_array_entry(key: str, count: int) -> bytes:
    """The start of a string-array entry claiming ``count`` strings (their bytes follow, or not)."""
    return _string(key) + struct.pack("<IIQ", 9, 8, count)


def sparse_string_array(out: Path, count: int) -> Path:
    """A GGUF header whose first entry claims ``count`` empty strings, in a sparse file large
    enough to hold them all (8 bytes each): it passes every "fits the file" check."""
    with open(out, "wb") as f:
        f.write(struct.pack("<4sIQQ", b"GGUF", 3, 0, 1) + string_array_entry("tokenizer.ggml.merges", count))
        f.truncate(24 + 36 + 8 * count + 4096)
    return out


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, good_models) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("crafted")
    llada = Path(good_models["llada"])
    files = {
        "loop-template": with_metadata(llada, out / "loop.gguf", {"tokenizer.chat_template": LOOP_TEMPLATE}),
        "bloat-template": with_metadata(llada, out / "bloat.gguf", {"tokenizer.chat_template": BLOAT_TEMPLATE}),
        "quadratic-template": with_metadata(llada, out / "quadratic.gguf",
                                            {"tokenizer.chat_template": QUADRATIC_TEMPLATE}),
        # autoregressive, so that nothing before the first tokenization refuses it (the server used to
        # die of SIGABRT there); a diffusion model would be refused first for its mask token
        "no-vocab": with_metadata(Path(good_models["smollm2"]), out / "no-vocab.gguf",
                                  {"tokenizer.ggml.model": "no_vocab"}),
        "strings-2-30": with_metadata(llada, out / "strings.gguf", {},
                                      first=string_array_entry("hoshikage.attack.strings", 2**30)),
        "strings-2-30-sparse": sparse_string_array(out / "sparse.gguf", 2**30),
    }
    fifo = out / "fifo.gguf"
    os.mkfifo(fifo)
    files["fifo"] = fifo
    return files


# -- the live server ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory, good_models, crafted):
    home = tmp_path_factory.mktemp("hoshikage-home")
    write_registry(home, good_models)
    entries = json.loads((home / "model_map.json").read_text())
    for name, path in crafted.items():
        entries[f"bad-{name}"] = {"path": str(path), "stop": []}
    (home / "model_map.json").write_text(json.dumps(entries))
    server = LiveServer(home, FAST_ENV).start()
    yield server
    server.stop()


def registry_bytes(server) -> bytes:
    return (server.home / "model_map.json").read_bytes()


def ask(server, model: str, content: str = "Hi", **kw) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=120, headers=server.headers(),
                      json={"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 3,
                            **kw})


def assert_still_fine(server, registry_before: bytes) -> None:
    """The server answers a normal request to another model, and the registry is unchanged."""
    assert server.proc.poll() is None, server.output()
    assert ask(server, "smollm2").status_code == 200
    listed = httpx.get(server.url + "/v1/models", headers=server.headers(), timeout=30)
    assert listed.status_code == 200, listed.text
    assert {"smollm2", "llada", "dream"} <= {m["id"] for m in listed.json()["data"]}
    assert registry_bytes(server) == registry_before


def assert_error(r: httpx.Response, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code and "Traceback" not in err["message"], err
    for word in words:
        assert word in err["message"], (word, err["message"])
    return err


@pytest.mark.parametrize("name", ["loop-template", "bloat-template"])
def test_a_template_that_loops_or_bloats_is_refused_by_the_probe(server, name):
    """Finding 3: before, the nested loop held the only worker for over 120 s (REQUEST_TIMEOUT=20
    did not apply) and every later request waited behind it."""
    before = registry_bytes(server)
    err = assert_error(ask(server, f"bad-{name}"), 500, "model_load_failed", "chat template")
    assert "steps" in err["message"] or "characters" in err["message"], err
    assert_still_fine(server, before)


def test_a_template_that_breaks_its_bound_on_a_long_message_is_a_400(server):
    before = registry_bytes(server)
    assert ask(server, "bad-quadratic-template", diffusion_steps=2).status_code == 200  # short: it renders
    err = assert_error(ask(server, "bad-quadratic-template", content="y" * 3000, diffusion_steps=2),
                       400, "validation_error", "chat template", "steps")
    assert err["param"] == "messages"
    assert_still_fine(server, before)


def test_a_model_without_a_vocabulary_is_refused(server):
    """Finding 9: tokenizer.ggml.model = "no_vocab" passed the pre-check and the probe, then
    llama.cpp aborted the server on the first tokenization (GGML_ASSERT)."""
    before = registry_bytes(server)
    assert_error(ask(server, "bad-no-vocab"), 500, "model_load_failed", "no vocabulary", "no_vocab")
    assert_still_fine(server, before)


@pytest.mark.parametrize("name", ["strings-2-30", "strings-2-30-sparse"])
def test_a_header_claiming_2_30_strings_is_refused_by_its_count(server, name):
    """Finding 10: the count is checked against the file's size and a cap before anything is
    allocated or walked; the refusal is remembered, and listing the models does not read it again."""
    before = registry_bytes(server)
    listed = httpx.get(server.url + "/v1/models", headers=server.headers(), timeout=30).json()["data"]
    assert {m["id"]: m["kind"] for m in listed}[f"bad-{name}"] is None
    first = assert_error(ask(server, f"bad-{name}"), 500, "model_load_failed", "1073741824")
    assert "more than the file can hold" in first["message"] or "at most" in first["message"], first
    again = assert_error(ask(server, f"bad-{name}"), 500, "model_load_failed")
    assert again["message"] == first["message"]
    assert_still_fine(server, before)


def test_a_fifo_in_the_registry_blocks_nothing(server):
    before = registry_bytes(server)
    listed = httpx.get(server.url + "/v1/models", headers=server.headers(), timeout=30)
    assert listed.status_code == 200
    assert_error(ask(server, "bad-fifo"), 500, "model_load_failed", "FIFO")
    assert_still_fine(server, before)


def add_model(server, name: str, path: str) -> httpx.Response:
    return httpx.post(server.url + "/admin/models", json={"name": name, "path": path}, timeout=30,
                      headers=server.headers())


def test_admin_paths_are_no_file_oracle(server, tmp_path):
    """Finding 5: /etc/passwd answered "not a GGUF file (magic b'root' ...)"; a FIFO froze the
    server. Now: the allow-list first, no file bytes in any message, only regular files opened."""
    before = registry_bytes(server)
    err = assert_error(add_model(server, "x", "/etc/passwd"), 400, "validation_error", "outside the folders")
    assert err["param"] == "path"
    missing = assert_error(add_model(server, "x", "/etc/no-such-file"), 400, "validation_error")
    assert missing["message"].replace("no-such-file", "passwd") == err["message"]  # exists or not: the same
    inside = server.home / "files"
    inside.mkdir(exist_ok=True)
    (inside / "passwd.gguf").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    err = assert_error(add_model(server, "x", str(inside / "passwd.gguf")), 400, "validation_error",
                       "not a GGUF file")
    assert "root" not in err["message"].replace(str(inside), "")
    os.mkfifo(inside / "fifo.gguf")
    assert_error(add_model(server, "x", str(inside / "fifo.gguf")), 400, "validation_error", "FIFO")
    assert_error(add_model(server, "x", "/dev/zero"), 400, "validation_error", "outside the folders")
    assert_still_fine(server, before)


def test_log_shows_no_abort(server):
    assert "GGML_ASSERT" not in "\n".join(server.log_lines())


# -- RAM disk (finding 11) ----------------------------------------------------------------------------

def planted_server(tmp_path_factory, good_models, plant) -> LiveServer:
    home = tmp_path_factory.mktemp("hoshikage-home")
    write_registry(home, good_models)
    server = LiveServer(home, FAST_ENV)
    plant(server.ramdisk / "hoshikage", tmp_path_factory.mktemp("elsewhere"))
    return server.start()


def _symlink(folder: Path, elsewhere: Path) -> None:
    folder.symlink_to(elsewhere, target_is_directory=True)


def _other_owner(folder: Path, elsewhere: Path) -> None:
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    os.chown(folder, 65534, 65534)  # nobody


def _world_writable(folder: Path, elsewhere: Path) -> None:
    folder.mkdir()
    os.chmod(folder, 0o777)


@pytest.mark.parametrize("plant", [_symlink, _other_owner, _world_writable], ids=lambda f: f.__name__[1:])
def test_a_planted_ramdisk_folder_is_not_used(tmp_path_factory, good_models, plant):
    if plant is _other_owner and os.geteuid() != 0:
        pytest.skip("needs root to plant a folder owned by another user")
    server = planted_server(tmp_path_factory, good_models, plant)
    try:
        before = registry_bytes(server)
        folder = server.ramdisk / "hoshikage"
        assert ask(server, "llada", diffusion_steps=2).status_code == 200  # loaded from its own file
        assert not any(p.suffix == ".gguf" for p in Path(os.path.realpath(folder)).iterdir())
        assert any("not using the RAM disk" in line for line in server.log_lines()), server.output()
        assert_still_fine(server, before)
    finally:
        server.stop()


def test_the_ramdisk_folder_and_copies_are_private(make_server):
    server = make_server(FAST_ENV)
    before = registry_bytes(server)
    assert ask(server, "llada", diffusion_steps=2).status_code == 200
    folder = server.ramdisk / "hoshikage"
    st = os.lstat(folder)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    copies = list(folder.iterdir())
    assert [p.suffix for p in copies] == [".gguf"], copies  # no temporary left behind
    assert stat.S_IMODE(os.lstat(copies[0]).st_mode) == 0o600
    assert_still_fine(server, before)


# -- deadlines (finding 13, this part) ------------------------------------------------------------------

def test_a_load_past_load_timeout_fails_the_request(make_server):
    server = make_server({**FAST_ENV, "LOAD_TIMEOUT": "0.001"})
    before = registry_bytes(server)
    assert_error(ask(server, "llada", diffusion_steps=2), 500, "model_load_failed", "LOAD_TIMEOUT")
    assert server.status()["status"] == "ok"
    assert httpx.get(server.url + "/v1/models", timeout=30).status_code == 200
    assert registry_bytes(server) == before


def test_the_library_load_deadline(good_models):
    from hoshikage import Model
    from hoshikage.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="took longer than"):
        Model(good_models["llada"], load_timeout=1e-9)
    Model(good_models["llada"], load_timeout=60).close()


# -- the probe's child (finding 9) ----------------------------------------------------------------------

def test_the_probe_refuses_no_vocab_after_loading_and_tokenizes(crafted):
    """Without the header pre-check, the check after the load refuses it; without that one too,
    the probe's tokenization is what llama.cpp aborts on, in the child."""
    from hoshikage.errors import ModelLoadError
    from hoshikage.server.probe import CHILD_CODE, probe_model

    no_precheck = "import hoshikage.model as _m\n_m.check_gguf_structure = lambda p: {}\n"
    with pytest.raises(ModelLoadError, match="no vocabulary"):
        probe_model(crafted["no-vocab"], code=no_precheck + CHILD_CODE)
    no_checks = no_precheck + "_m.Model._check_vocab = lambda self: None\n"
    with pytest.raises(ModelLoadError, match=r"crashed \(SIGABRT\)"):
        probe_model(crafted["no-vocab"], code=no_checks + CHILD_CODE)


# -- unit: the bounded renderer --------------------------------------------------------------------------

MESSAGES = [ChatMessage("user", "Hello")]
ATTACKS = {
    "nested loops": LOOP_TEMPLATE,
    "string times 10**10": BLOAT_TEMPLATE,
    "list times 10**9": "{{ ([1] * 1000000000)|length }}",
    "integer power": "{{ 10 ** (10 ** 10) }}",
    "repeated squaring": "{% set ns = namespace(n=3) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}"
                         "{% endfor %}{{ ns.n }}",
    "doubling by ~": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                     "{% endfor %}{{ ns.s|length }}",
    "doubling by +": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                     "{% endfor %}{{ ns.s|length }}",
    "center filter": "{{ 'x'|center(10000000000) }}",
    "ljust method": "{{ 'x'.ljust(10000000000) }}",
    "format width": "{{ '{:>10000000000}'.format('x') }}",
    "percent width": "{{ '%10000000000s' % 'x' }}",
    "join of copies": "{{ (['x' * 1000000] * 1000)|join }}",
    "join of a generator": "{% set l = ['x' * 900000, 'y' * 900000] %}{{ l|map('upper')|join }}",
    "replace amplification": "{{ ('x' * 100000).replace('', 'yyyyyyyyyy') }}",
    "output size": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "loops over lists": "{% set l = range(1000)|list %}{% for a in l %}{% for b in l %}{% for c in l %}"
                        "{% endfor %}{% endfor %}{% endfor %}",
    "range too long": "{{ range(10 ** 9)|length }}",
    "exponential macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                         "{{ f(40) }}",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_renderer_bounds(name):
    with pytest.raises(TemplateBoundError):
        render_jinja_chat_template(ATTACKS[name], MESSAGES, add_generation_prompt=True)


def test_renderer_output_matches_the_plain_sandbox(good_models):
    """Real templates (SmolLM2's, the test models') render exactly as jinja2's sandbox does."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi there"),
                ChatMessage("assistant", "Hello!"), ChatMessage("user", "Why is the sky blue? " * 20)]
    for name in ("smollm2", "llada", "dream"):
        template = read_header(good_models[name], keys={"tokenizer.chat_template"}, arrays=False,
                               tensors=False).kv["tokenizer.chat_template"]
        for gen in (True, False):
            want = env.from_string(template).render(
                messages=[{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=gen,
                bos_token="<s>", eos_token="</s>", enable_thinking=True)
            got = render_jinja_chat_template(template, messages, add_generation_prompt=gen, bos_token="<s>",
                                             eos_token="</s>")
            assert got == want, name


def test_renderer_cancellation_and_deadline():
    with pytest.raises(RenderStopped):
        render_jinja_chat_template(LOOP_TEMPLATE, MESSAGES, add_generation_prompt=True, should_stop=lambda: True)
    with pytest.raises(TemplateBoundError, match="deadline"):
        render_jinja_chat_template(LOOP_TEMPLATE, MESSAGES, add_generation_prompt=True, deadline=0.0)


def test_renderer_keeps_the_sandbox():
    for template in ("{{ ''.__class__.__mro__ }}", "{{ messages.append(1) }}", "{{ cycler.__init__.__globals__ }}"):
        with pytest.raises(ValueError):
            render_jinja_chat_template(template, MESSAGES, add_generation_prompt=True)


def test_a_template_that_breaks_its_bound_does_not_fall_back(good_models):
    from hoshikage import Model

    with Model(good_models["llada"], vocab_only=True) as model, pytest.raises(TemplateBoundError):
        model.apply_chat_template(MESSAGES, template=LOOP_TEMPLATE)


# -- unit: the header parser ------------------------------------------------------------------------------

def test_header_counts_are_checked_before_allocating(crafted):
    with pytest.raises(GGUFFormatError, match="more than the file can hold"):
        read_header(crafted["strings-2-30"], arrays=False, hash_tokens=True)
    with pytest.raises(GGUFFormatError, match="at most"):
        read_header(crafted["strings-2-30-sparse"], arrays=False, hash_tokens=True)
    assert read_architecture(crafted["strings-2-30-sparse"]) is None


def test_header_limits_on_entries(tmp_path):
    from hoshikage.gguf_file import MAX_KV

    p = tmp_path / "many-kv.gguf"
    with open(p, "wb") as f:
        f.write(struct.pack("<4sIQQ", b"GGUF", 3, 0, MAX_KV + 1))
        f.truncate(16 * (MAX_KV + 2))
    with pytest.raises(GGUFFormatError, match="at most"):
        read_header(p)


def test_header_reader_never_opens_a_fifo_blocking(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    outcome: list[object] = []
    t = threading.Thread(target=lambda: outcome.append(_catch(read_header, fifo)), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], NotRegularFileError) and "FIFO" in outcome[0].strerror


def _catch(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc


def test_kind_is_read_once_per_file_version(tmp_path, good_models, monkeypatch):
    from hoshikage.server import registry

    p = tmp_path / "m.gguf"
    shutil.copyfile(good_models["llada"], p)
    calls = []
    real = registry.read_architecture
    monkeypatch.setattr(registry, "read_architecture", lambda path: calls.append(path) or real(path))
    assert registry.guess_kind(p) == registry.guess_kind(p) == "diffusion"
    assert len(calls) == 1
    p.write_bytes(b"GGUF")  # a new version of the file is read again
    assert registry.guess_kind(p) is None and len(calls) == 2


def test_a_refused_file_is_not_read_again(tmp_path, crafted, monkeypatch):
    from hoshikage import gguf_check
    from hoshikage.errors import ModelLoadError
    from hoshikage.server.registry import ModelEntry
    from hoshikage.server.residency import Residency
    from hoshikage.server.settings import Settings

    calls = []
    real = gguf_check.check_gguf_structure
    monkeypatch.setattr(gguf_check, "check_gguf_structure", lambda p: calls.append(p) or real(p))
    residency = Residency(Settings(_env_file=None, hoshikage_home=tmp_path, ramdisk_path=None))
    entry = ModelEntry(name="x", path=crafted["no-vocab"])
    messages = set()
    for _ in range(3):
        with pytest.raises(ModelLoadError) as info:
            residency.acquire(entry)
        messages.add(str(info.value))
    assert len(calls) == 1 and len(messages) == 1 and "no vocabulary" in messages.pop()


def test_private_ramdisk_folder_rules(tmp_path):
    from hoshikage.server.residency import private_folder

    ok = tmp_path / "ok"
    assert private_folder(ok) is None and stat.S_IMODE(os.lstat(ok).st_mode) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    assert private_folder(old) is None and stat.S_IMODE(os.lstat(old).st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(ok)
    assert "symbolic link" in private_folder(link)
    open_ = tmp_path / "open"
    open_.mkdir()
    os.chmod(open_, 0o777)
    assert "written by other users" in private_folder(open_)
    (tmp_path / "file").write_text("x")
    assert "not a directory" in private_folder(tmp_path / "file")
