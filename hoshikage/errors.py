"""One exception hierarchy for Hoshikage; llama.h return codes map onto it here."""
from __future__ import annotations


class HoshikageError(Exception):
    """Base class of every error Hoshikage raises on purpose."""


class ParameterError(HoshikageError, ValueError):
    """A parameter of a call is invalid; ``param`` names it as the library does (a keyword of
    generate(), a DiffusionParams field); the server maps it to its request field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class ModelLoadError(HoshikageError):
    """A GGUF file could not be loaded; the message names the path and the reason."""


class ContextError(HoshikageError):
    """A llama_context could not be created (usually: not enough memory for n_ctx)."""


class DecodeError(HoshikageError):
    """llama_decode / llama_encode failed. ``code`` is the C return value."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class NoSlotError(DecodeError):
    """Return code 1: no KV slot for the batch (context full; shorten input or raise n_ctx)."""


class GenerationCancelled(HoshikageError):
    """A ``should_stop`` callback asked to stop (embed(); generate() reports a cancelled
    finish reason instead)."""


class ClosedError(HoshikageError):
    """A model or context was used after close()."""


# llama.h, llama_decode: 0 ok; 1 no KV slot; 2 aborted (Hoshikage sets no abort callback);
# -1 invalid batch; < -1 fatal.
_DECODE_MESSAGES = {
    1: "no KV slot for the batch: the context is full (use a larger n_ctx or a shorter input)",
    2: "aborted by the abort callback",
    -1: "invalid batch (token ids out of range, bad positions or too many tokens for n_batch)",
}


def check_decode(code: int, what: str = "llama_decode") -> None:
    """Raise the exception matching a llama_decode/llama_encode return code (0 is success)."""
    if code == 0:
        return
    message = f"{what} failed with code {code}: " + _DECODE_MESSAGES.get(code, "fatal error inside llama.cpp (see log)")
    if code == 1:
        raise NoSlotError(message, code)
    raise DecodeError(message, code)
