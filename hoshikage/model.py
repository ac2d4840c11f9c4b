"""Model: a loaded GGUF — metadata, vocabulary, tokenizer and chat template.

A Model owns one ``llama_model *``. Contexts (``hoshikage.context.Context``) keep their
model alive; ``close()`` frees the model and may be called twice. Nothing here calls C with
unchecked input: paths are checked for existence and the GGUF magic first.
"""
from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import _ffi
from ._llama_calls import _LlamaErrors, _load_deadline, _read_c_string
from .devices import Placement
from .chat_template import ChatMessage, TemplateBoundError, normalize_messages, render_jinja_chat_template
from .errors import ClosedError, ModelLoadError
from .gguf_check import check_gguf_file, check_gguf_structure
from .text_limits import check_runs

LLAMA_TOKEN_NULL = -1
# enum llama_vocab_type (llama.h)
VOCAB_NONE, VOCAB_SPM, VOCAB_BPE, VOCAB_WPM, VOCAB_UGM = 0, 1, 2, 3, 4


class Model:
    """A GGUF model loaded by llama.cpp.

    Args:
        path: the .gguf file.
        n_gpu_layers: layers offloaded to GPUs / RPC servers (0 none, -1 all; default 0, -1 with rpc).
        rpc, tensor_split: RPC servers ``["HOST:PORT", ...]`` and the offloaded layers'
            proportions per device (llama.cpp's ``--rpc``, ``--tensor-split``; hoshikage.devices).
        use_mmap: map the file instead of reading it (fast loads, shared pages).
        use_mlock: lock the weights in RAM.
        vocab_only: load only the vocabulary (tokenizer work, no weights).
        load_timeout: seconds the load may take; past them llama.cpp is told to stop (through
            its progress callback) and ModelLoadError says so. None: no limit.
    """

    def __init__(self, path: str | os.PathLike, *, n_gpu_layers: int | None = None, use_mmap: bool = True,
                 use_mlock: bool = False, vocab_only: bool = False, load_timeout: float | None = None,
                 rpc: str | Sequence[str] | None = None, tensor_split: str | Sequence[float] | None = None):
        self.path = check_gguf_file(path)
        placement = Placement(rpc, tensor_split)
        n_gpu_layers = (-1 if placement.endpoints else 0) if n_gpu_layers is None else n_gpu_layers
        if not isinstance(n_gpu_layers, int) or n_gpu_layers < -1:
            raise ValueError(f"n_gpu_layers must be an int >= -1, got {n_gpu_layers!r}")
        check_gguf_structure(self.path)  # what llama.cpp would abort on (GGML_ASSERT) is refused here
        lib = _ffi.lib()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers  # negative = all layers (llama.h)
        # llama.h folds mmap/mlock into one enum: NONE 0, MMAP 1, MLOCK 2, MMAP_MLOCK 3.
        params.load_mode = (1 if use_mmap else 0) + (2 if use_mlock else 0)
        params.vocab_only = bool(vocab_only)
        placement.apply(params)  # RPC servers checked reachable first (llama.cpp aborts otherwise)
        self.placement, self.rpc = placement, placement.endpoints
        progress = _load_deadline(load_timeout)
        if progress is not None:
            params.progress_callback = progress
        t0 = time.monotonic()
        with _LlamaErrors() as errors, placement.loading():
            ptr = lib.llama_model_load_from_file(os.fsencode(self.path), params)
        if ptr == _ffi.NULL:
            if progress is not None and time.monotonic() - t0 >= load_timeout:
                raise ModelLoadError(f"loading {self.path} took longer than {load_timeout:g}s and was stopped")
            why = errors.reason()
            raise ModelLoadError(
                f"llama.cpp could not load {self.path}: " + (why or "corrupt, truncated, or an unsupported "
                                                               "architecture (the hoshikage.llama log says why)"))
        self._ptr = ptr
        self._lib = lib
        self._contexts: weakref.WeakSet = weakref.WeakSet()  # open Contexts on it: closed first
        self._vocab = lib.llama_model_get_vocab(ptr)
        try:
            self._check_vocab()
        except ModelLoadError:
            self.close()
            raise
        self.load_params = {"n_gpu_layers": n_gpu_layers, "use_mmap": use_mmap, "use_mlock": use_mlock,
                            "vocab_only": vocab_only, "rpc": self.rpc, "tensor_split": placement.split}
        self._metadata: dict[str, str] | None = None

    def _check_vocab(self) -> None:
        """Refuse a vocabulary llama.cpp would abort on (GGML_ASSERT/ABORT) at the first tokenize.

        From llama-vocab.cpp: tokenizing with no vocabulary (``tokenizer.ggml.model`` "no_vocab"
        or "none") aborts; so does adding a BOS/EOS token the vocabulary lacks (SPM, BPE and
        UGM when ``add_bos``/``add_eos``; WPM always adds BOS and SEP), and the "test"
        tokenizer divides by the vocabulary's size.
        """
        lib, vocab, null = self._lib, self._vocab, LLAMA_TOKEN_NULL
        kind = int(lib.llama_vocab_type(vocab))
        if kind == VOCAB_NONE:
            raise ModelLoadError(f"{self.path} has no vocabulary (tokenizer.ggml.model is 'no_vocab' or 'none'): "
                                 "it cannot turn text into tokens")
        if int(lib.llama_vocab_n_tokens(vocab)) <= 0:
            raise ModelLoadError(f"{self.path} has an empty vocabulary (tokenizer.ggml.tokens)")
        missing = []
        if kind == VOCAB_WPM:
            missing = [name for name, fn in (("BOS", "llama_vocab_bos"), ("SEP", "llama_vocab_sep"))
                       if int(getattr(lib, fn)(vocab)) == null]
        elif kind in (VOCAB_SPM, VOCAB_BPE, VOCAB_UGM):
            if lib.llama_vocab_get_add_bos(vocab) and int(lib.llama_vocab_bos(vocab)) == null:
                missing.append("BOS")
            if lib.llama_vocab_get_add_eos(vocab) and int(lib.llama_vocab_eos(vocab)) == null:
                missing.append("EOS")
        if missing:
            raise ModelLoadError(f"{self.path}: the tokenizer adds a {' and a '.join(missing)} token but the "
                                 "vocabulary has none (a special token id is missing or out of range); "
                                 "llama.cpp would abort on the first tokenization")

    # -- lifetime --------------------------------------------------------------------------

    @property
    def ptr(self) -> Any:
        """The ``llama_model *``; raises ClosedError after close()."""
        if self._ptr is None:
            raise ClosedError(f"model {self.path.name} is closed")
        return self._ptr

    @property
    def vocab_ptr(self) -> Any:
        self.ptr  # raises when closed
        return self._vocab

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Free the model, after closing every Context still open on it (using one later raises
        ClosedError, never touches freed memory). Safe to call twice."""
        placement = getattr(self, "placement", None) if getattr(self, "_ptr", None) is not None else None
        lost = placement.lost() if placement is not None else None
        for context in list(getattr(self, "_contexts", ())):
            if lost:  # buffers on a lost RPC server cannot be freed (llama.cpp would abort): left
                context._ptr = None
            context.close()
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None and not lost:
            self._lib.llama_model_free(ptr)

    def _adopt(self, context: Any) -> None:
        """Track an open Context on this model (weakly), so that close() closes it first."""
        self.ptr  # raises when closed
        self._contexts.add(context)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # safety net only; prefer close() / with
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.arch}, {self.n_vocab} tokens"
        return f"Model({str(self.path)!r}, {state})"

    # -- metadata --------------------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, str]:
        """GGUF key/value metadata as llama.cpp renders it (values as strings; arrays omitted)."""
        if self._metadata is None:
            lib, ptr = self._lib, self.ptr
            out: dict[str, str] = {}
            for i in range(lib.llama_model_meta_count(ptr)):
                key = _read_c_string(lambda buf, n: lib.llama_model_meta_key_by_index(ptr, i, buf, n))
                val = _read_c_string(lambda buf, n: lib.llama_model_meta_val_str_by_index(ptr, i, buf, n))
                if key is not None and val is not None:
                    out[key] = val
            self._metadata = out
        return dict(self._metadata)

    def meta(self, key: str) -> str | None:
        """One metadata value as a string, or None if absent."""
        lib, ptr = self._lib, self.ptr
        return _read_c_string(lambda buf, n: lib.llama_model_meta_val_str(ptr, key.encode(), buf, n))

    @property
    def arch(self) -> str:
        return self.meta("general.architecture") or "unknown"

    @property
    def description(self) -> str:
        lib, ptr = self._lib, self.ptr
        return _read_c_string(lambda buf, n: lib.llama_model_desc(ptr, buf, n)) or ""

    @property
    def n_vocab(self) -> int:
        return int(self._lib.llama_vocab_n_tokens(self.vocab_ptr))

    @property
    def n_ctx_train(self) -> int:
        return int(self._lib.llama_model_n_ctx_train(self.ptr))

    @property
    def n_embd(self) -> int:
        return int(self._lib.llama_model_n_embd(self.ptr))

    @property
    def n_params(self) -> int:
        return int(self._lib.llama_model_n_params(self.ptr))

    @property
    def size_bytes(self) -> int:
        """Bytes of all tensors (the weights' memory, not counting contexts)."""
        return int(self._lib.llama_model_size(self.ptr))

    @property
    def is_diffusion(self) -> bool:
        """True for diffusion LLMs (llama.cpp archs llada, llada-moe, dream, rnd1)."""
        return bool(self._lib.llama_model_is_diffusion(self.ptr))

    @property
    def shift_logits(self) -> bool:
        """``diffusion.shift_logits``; a missing key counts as true, as llama-diffusion-cli reads it."""
        value = self.meta("diffusion.shift_logits")
        return True if value is None else value == "true"

    @property
    def chat_template(self) -> str | None:
        raw = self._lib.llama_model_chat_template(self.ptr, _ffi.NULL)
        return None if raw == _ffi.NULL else _ffi.ffi.string(raw).decode("utf-8", "replace")

    # -- special tokens --------------------------------------------------------------------

    def _special(self, fn: str) -> int | None:
        tok = int(getattr(self._lib, fn)(self.vocab_ptr))
        return None if tok == LLAMA_TOKEN_NULL else tok

    @property
    def mask_token(self) -> int | None:
        return self._special("llama_vocab_mask")

    @property
    def bos_token(self) -> int | None:
        return self._special("llama_vocab_bos")

    @property
    def eos_token(self) -> int | None:
        return self._special("llama_vocab_eos")

    @property
    def eot_token(self) -> int | None:
        return self._special("llama_vocab_eot")

    @property
    def special_tokens(self) -> dict[str, int]:
        """The special tokens the vocabulary defines, by role (absent roles are left out)."""
        roles = {"bos": "llama_vocab_bos", "eos": "llama_vocab_eos", "eot": "llama_vocab_eot",
                 "sep": "llama_vocab_sep", "nl": "llama_vocab_nl", "pad": "llama_vocab_pad",
                 "mask": "llama_vocab_mask"}
        out = {}
        for role, fn in roles.items():
            tok = self._special(fn)
            if tok is not None:
                out[role] = tok
        return out

    @property
    def add_bos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_bos(self.vocab_ptr))

    @property
    def add_eos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_eos(self.vocab_ptr))

    def is_eog(self, token: int) -> bool:
        """True if ``token`` ends generation (eos, eot, and the like)."""
        return bool(self._lib.llama_vocab_is_eog(self.vocab_ptr, int(token)))

    # -- tokenizer -------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Text -> token ids. ``add_special`` adds BOS/EOS as the model wants; ``parse_special``
        turns special-token text such as ``<|im_start|>`` into its single token. ValueError for
        a run of one character class that llama.cpp's regex pre-tokenizers would crash on
        (``hoshikage.text_limits``)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        check_runs(text)
        data = text.encode("utf-8", "surrogatepass")
        lib, vocab = self._lib, self.vocab_ptr
        capacity = len(data) + 8
        while True:
            buf = _ffi.ffi.new("llama_token[]", capacity)
            n = lib.llama_tokenize(vocab, data, len(data), buf, capacity, add_special, parse_special)
            if n >= 0:
                return list(_ffi.ffi.unpack(buf, n))
            if -n <= capacity or -n == 2**31:  # int32 overflow: the input is too long to tokenize
                raise ValueError(f"text of {len(data)} bytes is too long to tokenize")
            capacity = -n

    def token_to_piece(self, token: int, *, special: bool = True) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character)."""
        self._check_token(token)
        lib, vocab = self._lib, self.vocab_ptr
        size = 64
        while True:
            buf = _ffi.ffi.new("char[]", size)
            n = lib.llama_token_to_piece(vocab, int(token), buf, size, 0, special)
            if n >= 0:
                return _ffi.ffi.unpack(buf, n)
            size = -n

    def detokenize(self, tokens: Iterable[int], *, remove_special: bool = False,
                   unparse_special: bool = False) -> str:
        """Token ids -> text, as llama_detokenize does (the inverse of tokenize)."""
        toks = [int(t) for t in tokens]
        for t in toks:
            self._check_token(t)
        lib, vocab = self._lib, self.vocab_ptr
        arr = _ffi.ffi.new("llama_token[]", toks or [0])
        size = max(16, 8 * len(toks))
        while True:
            buf = _ffi.ffi.new("char[]", size)
            n = lib.llama_detokenize(vocab, arr, len(toks), buf, size, remove_special, unparse_special)
            if n >= 0:
                return _ffi.ffi.unpack(buf, n).decode("utf-8", "replace")
            size = -n

    def _check_token(self, token: int) -> None:
        if not 0 <= int(token) < self.n_vocab:
            raise ValueError(f"token id {token} is out of range [0, {self.n_vocab})")

    # -- chat ------------------------------------------------------------------------------

    def apply_chat_template(self, messages: Sequence[ChatMessage | dict], *,
                            add_generation_prompt: bool = True, template: str | None = None,
                            engine: str = "jinja", deadline: float | None = None,
                            should_stop: Callable[[], bool] | None = None) -> str:
        """Render ``messages`` ([{"role", "content"}, ...]) with the model's chat template.

        engine "jinja" (default) renders the template the way llama.cpp's tools do
        (``common_chat_templates_apply``: jinja, then a leading BOS / trailing EOS text is
        dropped when the tokenizer adds them itself); if the template does not render, or with
        engine "builtin", llama.cpp's built-in ``llama_chat_apply_template`` is used.
        The jinja render is bounded (``hoshikage.chat_template``): ``deadline`` (a
        ``time.monotonic()`` value) and ``should_stop`` limit it, and a template that breaks a
        bound raises TemplateBoundError (a ValueError) instead of falling back.
        """
        if engine not in ("jinja", "builtin"):
            raise ValueError(f"engine must be 'jinja' or 'builtin', got {engine!r}")
        tmpl = template if template is not None else self.chat_template
        if tmpl is None:
            raise ValueError(f"model {self.path.name} has no chat template; pass template= or use a raw prompt")
        msgs = normalize_messages(messages)
        if engine == "jinja":
            bos, eos = self._token_text(self.bos_token), self._token_text(self.eos_token)
            try:
                text = render_jinja_chat_template(tmpl, msgs, add_generation_prompt=add_generation_prompt,
                                                  bos_token=bos, eos_token=eos, deadline=deadline,
                                                  should_stop=should_stop)
            except TemplateBoundError:
                raise
            except ValueError:
                text = None
            if text is not None:
                if self.add_bos and bos and text.startswith(bos):
                    text = text[len(bos):]
                if self.add_eos and eos and text.endswith(eos):
                    text = text[: -len(eos)]
                return text
        builtin = self._builtin_chat_template(tmpl, msgs, add_generation_prompt)
        if builtin is None:
            raise ValueError(f"the chat template of {self.path.name} renders neither with jinja nor with "
                             "llama.cpp's built-in engine")
        return builtin

    def _builtin_chat_template(self, tmpl: str, msgs: list[ChatMessage], add_ass: bool) -> str | None:
        """llama_chat_apply_template, or None when llama.cpp does not recognise the template."""
        ffi = _ffi.ffi
        keep = [ffi.new("char[]", m.role.encode()) for m in msgs] + \
               [ffi.new("char[]", m.content.encode("utf-8", "surrogatepass")) for m in msgs]
        chat = ffi.new("struct llama_chat_message[]", len(msgs) or 1)
        for i in range(len(msgs)):
            chat[i].role = keep[i]
            chat[i].content = keep[len(msgs) + i]
        tmpl_c = tmpl.encode()
        size = 256 + 2 * sum(len(m.content) + len(m.role) for m in msgs)
        while True:
            buf = ffi.new("char[]", size)
            n = self._lib.llama_chat_apply_template(tmpl_c, chat, len(msgs), add_ass, buf, size)
            if n < 0:
                return None
            if n <= size:
                return ffi.unpack(buf, n).decode("utf-8", "replace")
            size = n

    def _token_text(self, token: int | None) -> str:
        return "" if token is None else self.token_to_piece(token, special=True).decode("utf-8", "replace")
