"""Grammar-constrained sampling: llama.cpp's grammar sampler at the head of the sampler chain.

The grammar sets the logits of every token it rejects to -inf before the rest of the chain
(penalties, top-k, ..., dist) runs, so the sampled token always fits the grammar. llama.cpp's
grammar code throws C++ exceptions (a grammar that no token can continue, a rejected token);
every call that can reach it goes through the chat shim's ``*_checked`` functions, which turn
them into :class:`GrammarError` instead of an abort.
"""
from __future__ import annotations

from typing import Any

from .. import _ffi
from ..chat_format import Grammar, shim_error
from ..errors import HoshikageError


class GrammarError(HoshikageError):
    """The grammar could not be built, or constrained generation reached a dead end."""


def _raise(error: Any, what: str) -> None:
    raise GrammarError(f"{what}: {shim_error(error)}")


def prefill_tokens(model: Any, text: str) -> list[int]:
    """``text``'s tokens as llama.cpp's sampling feeds them to a grammar (common_sampler_init):
    specials parsed, no BOS, and a leading token that is only the tokenizer's added space skipped."""
    tokens = model.tokenize(text, add_special=False, parse_special=True)
    if tokens and not text[:1].isspace() and model.token_to_piece(tokens[0])[:1].isspace():
        tokens = tokens[1:]
    return tokens


def make_grammar_sampler(model: Any, grammar: Grammar) -> Any:
    """An owned ``llama_sampler *`` for ``grammar`` (already fed its prefill); the caller adds it
    to a chain (which then owns it) or frees it."""
    ffi, chat, lib = _ffi.ffi, _ffi.chat_lib(), _ffi.lib()
    error = ffi.new("char **")
    patterns = [ffi.new("char[]", p.encode("utf-8")) for p in grammar.trigger_patterns]
    pattern_array = ffi.new("const char *[]", patterns) if patterns else ffi.NULL
    token_array = ffi.new("llama_token[]", list(grammar.trigger_tokens)) if grammar.trigger_tokens else ffi.NULL
    ptr = chat.hk_sampler_init_grammar_checked(model.vocab_ptr, grammar.text.encode("utf-8"), pattern_array,
                                                len(patterns), token_array, len(grammar.trigger_tokens),
                                                grammar.lazy, error)
    if ptr == ffi.NULL:
        _raise(error, "the grammar was refused")
    if grammar.prefill and not grammar.lazy:
        for token in prefill_tokens(model, grammar.prefill):
            if chat.hk_sampler_accept_checked(ptr, token, error) != 0:
                lib.llama_sampler_free(ptr)
                _raise(error, "the grammar does not accept the prompt's generation prefix")
    return ptr


def sample_checked(chain: Any, ctx_ptr: Any, idx: int = -1) -> int:
    """``llama_sampler_sample`` through the shim: a grammar dead end is a GrammarError."""
    ffi, chat = _ffi.ffi, _ffi.chat_lib()
    token, error = ffi.new("llama_token *"), ffi.new("char **")
    if chat.hk_sampler_sample_checked(chain, ctx_ptr, idx, token, error) != 0:
        _raise(error, "constrained generation reached a token the grammar rejects")
    return int(token[0])
