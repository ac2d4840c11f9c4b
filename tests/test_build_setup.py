"""The set-up steps a fresh machine runs (issue: a fresh machine must work).

build_llama.py's source step is tested against a package index served on 127.0.0.1 with a
small stand-in sdist, so that a cold cache (no ``downloads/``, no ``src/``) is exercised on every
run without the 76 MB download: the file is found on the index pip is configured with, fetched
as one file, checked by sha256, and its ``vendor/llama.cpp`` extracted.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import sys
import tarfile
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import build_llama  # noqa: E402

from hoshikage.cli.examples import base_url, curl_lines  # noqa: E402


def stand_in_sdist() -> bytes:
    """A tarball shaped like the pinned sdist: vendor/llama.cpp/include/llama.h and one file outside."""
    buf = io.BytesIO()
    prefix = f"llama_cpp_python-{build_llama.LLAMA_CPP_PYTHON_VERSION}/"
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in ((prefix + "vendor/llama.cpp/include/llama.h", b"/* llama.h */\n"),
                           (prefix + "pyproject.toml", b"[build-system]\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Index:
    """A simple-API index on 127.0.0.1: ``/simple/llama-cpp-python/`` lists ``files``."""

    def __init__(self, files: dict[str, bytes], json_api: bool):
        self.files, self.json_api, self.requests = files, json_api, []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                index.requests.append(self.path)
                if self.path == "/simple/llama-cpp-python/":
                    if index.json_api:
                        body = json.dumps({"files": [{"filename": n, "url": f"../../files/{n}"}
                                                     for n in index.files]}).encode()
                        kind = "application/vnd.pypi.simple.v1+json"
                    else:
                        body = "".join(f'<a href="/files/{n}#sha256=0">{n}</a>\n' for n in index.files).encode()
                        kind = "text/html"
                elif self.path.startswith("/files/") and self.path[7:] in index.files:
                    body, kind = index.files[self.path[7:]], "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pinned(monkeypatch):
    """The stand-in sdist's bytes, with build_llama's pin pointed at its sha256."""
    data = stand_in_sdist()
    monkeypatch.setattr(build_llama, "SDIST_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setattr(build_llama, "pip_setting",
                        lambda name: {"index-url": build_llama.os.environ.get("PIP_INDEX_URL", "")}.get(name, ""))
    return data


@pytest.mark.parametrize("json_api", [False, True], ids=["html", "json"])
def test_cold_cache_fetches_verifies_and_extracts(tmp_path, monkeypatch, pinned, json_api):
    index = Index({build_llama.SDIST_NAME: pinned, "llama_cpp_python-0.0.1.tar.gz": b"other"}, json_api)
    try:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        root = tmp_path / "empty-cache"  # neither downloads/ nor src/ exist yet
        sdist = build_llama.fetch_sdist(root)
        assert sdist.read_bytes() == pinned
        tree = build_llama.extract_llama_cpp(root, sdist)
        assert (tree / "include" / "llama.h").read_bytes() == b"/* llama.h */\n"
        assert not (tree.parent / "pyproject.toml").exists()  # only vendor/llama.cpp is extracted
        # Warm: neither step touches the index again.
        before = len(index.requests)
        assert build_llama.fetch_sdist(root) == sdist
        assert build_llama.extract_llama_cpp(root, sdist) == tree
        assert len(index.requests) == before
    finally:
        index.close()


def test_sha256_mismatch_is_refused_and_nothing_is_kept(tmp_path, monkeypatch, pinned):
    index = Index({build_llama.SDIST_NAME: pinned + b"tampered"}, json_api=False)
    try:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        with pytest.raises(build_llama.BuildError, match="sha256 mismatch"):
            build_llama.fetch_sdist(tmp_path)
        assert list((tmp_path / "downloads").iterdir()) == []
    finally:
        index.close()


def test_unreachable_index_names_what_was_tried_and_the_real_fixes(tmp_path, monkeypatch, pinned):
    index = Index({"llama_cpp_python-0.0.1.tar.gz": b"x"}, json_api=True)  # reachable, file missing
    index.close()
    monkeypatch.setenv("PIP_INDEX_URL", index.url)  # closed: connection refused
    with pytest.raises(build_llama.BuildError) as err:
        build_llama.fetch_sdist(tmp_path)
    msg = str(err.value)
    assert "step 'source'" in msg and index.url in msg
    assert "HOSHIKAGE_LLAMA_CPP_DIR" in msg and str(tmp_path / "downloads" / build_llama.SDIST_NAME) in msg
    assert "build backend" not in msg and "scikit" not in msg


def test_index_without_the_pinned_file_says_so(tmp_path, monkeypatch, pinned):
    index = Index({"llama_cpp_python-0.0.1.tar.gz": b"x"}, json_api=True)
    try:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        with pytest.raises(build_llama.BuildError, match=f"no {build_llama.SDIST_NAME} listed"):
            build_llama.fetch_sdist(tmp_path)
    finally:
        index.close()


def test_pip_setting_reads_the_environment_first(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert build_llama.pip_setting("index-url") == "http://127.0.0.1:9/simple"
    assert build_llama.package_indexes()[0] == "http://127.0.0.1:9/simple"


def test_curl_lines_paste_into_a_shell():
    import shlex

    class Entry:
        def __init__(self, max_tokens=None):
            self.max_tokens = max_tokens

    lines = curl_lines("0.0.0.0", 3030, {"smollm2": Entry(), "test-llada-tiny": Entry(32)}, api_key_set=True)
    assert len(lines) == 2
    argv = shlex.split(lines[1])
    assert argv[:3] == ["curl", "-s", "http://127.0.0.1:3030/v1/chat/completions"]
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == "test-llada-tiny" and body["max_tokens"] == 32
    assert "Authorization: Bearer $API_KEY" in argv  # the key itself is never printed
    assert base_url("::1", 8080) == "http://[::1]:8080"


@pytest.mark.filterwarnings("ignore::UserWarning")  # setuptools: pyproject reading is "beta"
def test_the_version_has_one_source_and_tqdm_is_declared():
    """pyproject.toml takes the version from hoshikage.__version__ (read statically, nothing
    imported), so an editable install never reports a second, stale number."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from setuptools.config.pyprojecttoml import read_configuration

    import hoshikage

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hoshikage.__version__"}
    assert any(d.split(">")[0].strip() == "tqdm" for d in project["project"]["dependencies"])
    assert read_configuration(Path(__file__).resolve().parents[1] / "pyproject.toml")["project"]["version"] \
        == hoshikage.__version__


def test_parsed_output_never_holds_the_compilers_warnings():
    """stdout_of returns stdout alone, however the two streams interleave: 256 KB of output
    with a warning on stderr between every 4 KB (merged, they landed inside the cdef)."""
    script = ("import sys\nfor i in range(64):\n    sys.stdout.write('x' * 4095 + '\\n'); sys.stdout.flush()\n"
              "    sys.stderr.write('warning: redefined\\n'); sys.stderr.flush()\n")
    out = build_llama.stdout_of([sys.executable, "-c", script], "test", "no fix")
    assert out == ("x" * 4095 + "\n") * 64


def test_the_cdef_generates_and_parses_whatever_the_cache_path(tmp_path, native_build):
    """The cdef step on the pinned headers seen through 40 paths of consecutive lengths (a
    temporary CI cache has a longer path than ~/.cache). The preprocessor warns ("GGML_API
    redefined"); merged into its output, the warning landed inside the cdef for 2 of 27 path
    lengths tried (and in a cold CI run), and cffi refused it. None may fail now."""
    import shutil

    source = Path(native_build.manifest["source_dir"])
    headers = tmp_path / "headers"
    for sub in ("include", "ggml/include"):
        shutil.copytree(source / sub, headers / sub)
    for n in range(1, 41):
        tree = tmp_path / ("d" * n)
        tree.symlink_to(headers, target_is_directory=True)
        cdef = build_llama.generate_cdef(tree, native_build.llama_cpp_commit, tmp_path)
        assert "warning" not in cdef and "In file included" not in cdef, f"path length {len(str(tree))}"
        build_llama.check_cdef_parses(cdef)
    assert "ggml_backend_dev_count" in cdef and "llama_model_load_from_file" in cdef
