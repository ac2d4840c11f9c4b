"""The generated cdef agrees with the compiler, and the loader explains its failures."""
from __future__ import annotations

import json

import pytest

from hoshikage import _ffi
from hoshikage._ffi import _loader


def test_struct_layouts_match_the_compiler(native_build):
    layouts = native_build.manifest["layouts"]
    assert "llama_context_params" in layouts and "llama_batch" in layouts
    for struct, layout in layouts.items():
        assert _ffi.ffi.sizeof(f"struct {struct}") == layout["sizeof"], struct
        for field, offset in layout["offsetof"].items():
            assert _ffi.ffi.offsetof(f"struct {struct}", field) == offset, f"{struct}.{field}"


def test_cdef_records_the_llama_cpp_commit(native_build):
    first_line = native_build.cdef.read_text().splitlines()[0]
    assert "Do not edit" in first_line
    assert native_build.llama_cpp_commit in first_line


def test_diffusion_functions_are_bound(native_build):
    lib = _ffi.lib()
    for name in ("llama_model_is_diffusion", "llama_vocab_mask", "llama_set_causal_attn", "llama_get_logits"):
        assert hasattr(lib, name)


def test_missing_library_lists_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSHIKAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSHIKAGE_LIBLLAMA", str(tmp_path / "nope.so"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(_loader.LibraryNotFound) as err:
        _loader.find_native_build()
    msg = str(err.value)
    assert "nope.so" in msg and "current.json" in msg and ".config/hoshikage/lib" in msg
    assert "build_llama.py" in msg


def test_corrupt_cache_pointer_is_reported(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "current.json").write_text(json.dumps({"build_dir": str(tmp_path / "gone")}))
    monkeypatch.setenv("HOSHIKAGE_CACHE_DIR", str(cache))
    monkeypatch.delenv("HOSHIKAGE_LIBLLAMA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(_loader.LibraryNotFound, match="broken build"):
        _loader.find_native_build()


def test_user_library_in_config_dir_is_found(tmp_path, monkeypatch, native_build):
    home = tmp_path / "home"
    libdir = home / ".config" / "hoshikage" / "lib"
    libdir.mkdir(parents=True)
    (libdir / "libllama.so").write_bytes(native_build.library.read_bytes())
    (libdir / "llama_cdef.h").write_text(native_build.cdef.read_text())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HOSHIKAGE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HOSHIKAGE_LIBLLAMA", raising=False)
    found = _loader.find_native_build()
    assert found.library == libdir / "libllama.so"


def fake_cache(tmp_path, monkeypatch) -> dict:
    """A build cache whose manifest names a library and a cdef (files that are never opened)."""
    build = tmp_path / "cache" / "build" / "k"
    (build / "bin").mkdir(parents=True)
    manifest = {"library": str(build / "bin" / "libllama.so"), "cdef": str(build / "llama_cdef.h"),
                "chat_library": str(build / "bin" / "libhoshikage-chat.so")}
    for key in ("library", "cdef"):
        open(manifest[key], "w").close()
    (build / "hoshikage-build.json").write_text(json.dumps(manifest))
    (tmp_path / "cache" / "current.json").write_text(json.dumps({"build_dir": str(build)}))
    monkeypatch.setenv("HOSHIKAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HOSHIKAGE_LLAMA_CDEF", raising=False)
    return manifest


def test_a_foreign_library_is_not_paired_with_the_cache_cdef(tmp_path, monkeypatch):
    fake_cache(tmp_path, monkeypatch)
    foreign = tmp_path / "elsewhere" / "libllama.so"
    foreign.parent.mkdir()
    foreign.write_bytes(b"not the cached build")
    monkeypatch.setenv("HOSHIKAGE_LIBLLAMA", str(foreign))
    with pytest.raises(_loader.LibraryNotFound, match="HOSHIKAGE_LLAMA_CDEF") as err:
        _loader.find_native_build()
    assert str(foreign) in str(err.value) and "not the library of the cached build" in str(err.value)
    (foreign.parent / "llama_cdef.h").write_text("/* its own */")
    found = _loader.find_native_build()  # its own declarations, and none of the cache's shims
    assert found.cdef == foreign.parent / "llama_cdef.h" and found.manifest == {}
    monkeypatch.setenv("HOSHIKAGE_LLAMA_CDEF", str(tmp_path / "chosen.h"))
    assert _loader.find_native_build().cdef == tmp_path / "chosen.h"


def test_the_cached_library_named_by_path_keeps_its_build(tmp_path, monkeypatch):
    manifest = fake_cache(tmp_path, monkeypatch)
    monkeypatch.setenv("HOSHIKAGE_LIBLLAMA", manifest["library"])
    found = _loader.find_native_build()
    assert str(found.cdef) == manifest["cdef"] and str(found.chat_library) == manifest["chat_library"]


def test_library_not_found_is_a_hoshikage_error():
    from hoshikage.errors import HoshikageError

    assert issubclass(_loader.LibraryNotFound, HoshikageError)
