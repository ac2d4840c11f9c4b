"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Codes are those of Hoshikage 1.0 (model_not_found, model_load_failed, inference_failed,
processing_timeout, validation_error), plus server_busy (queue full or waited too long) and
the authentication codes. ``CODES`` gives each code its usual HTTP status and its type; a few
are sent with another status: validation_error is 422 when the request schema refuses a field
and 400 when the library (or a server limit) refuses a value it accepted; inference_failed is
500 for a registry write too; HTTP errors from Starlette keep their own status.
"""
from __future__ import annotations

import functools
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ParameterError
from .param_fields import REQUEST_NAMES

# code -> (usual HTTP status, OpenAI error type); APIError(status=...) overrides the status
CODES: dict[str, tuple[int, str]] = {
    "validation_error": (422, "invalid_request_error"),
    "invalid_request": (400, "invalid_request_error"),
    "memory_budget_exceeded": (400, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "request_timeout": (408, "invalid_request_error"),
    "host_not_allowed": (400, "invalid_request_error"),
    "model_not_found": (404, "invalid_request_error"),
    "not_found": (404, "invalid_request_error"),
    "invalid_api_key": (401, "authentication_error"),
    "forbidden": (403, "permission_error"),
    "server_busy": (429, "rate_limit_error"),
    "queue_timeout": (503, "server_error"),
    "processing_timeout": (503, "server_error"),
    "shutting_down": (503, "server_error"),
    "model_load_failed": (500, "server_error"),
    "inference_failed": (500, "server_error"),
    "internal_error": (500, "server_error"),
}


class APIError(Exception):
    """An error the API reports to the client; ``code`` decides the status and type."""

    def __init__(self, code: str, message: str, param: str | None = None, status: int | None = None):
        super().__init__(message)
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message
        self.param = param
        self.status = status or CODES[code][0]

    @property
    def type(self) -> str:
        return CODES[self.code][1]

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status in (429, 503) else None
        if self.code == "invalid_api_key":
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


@functools.cache
def _request_fields() -> frozenset[str]:
    """Every field a generation request has (the request schemas)."""
    from .schemas import ChatCompletionRequest, CompletionRequest

    return frozenset({*ChatCompletionRequest.model_fields, *CompletionRequest.model_fields})


def request_field(param: str) -> str | None:
    """The request field a ParameterError's ``param`` names: a declared parameter's library name
    maps to its request field (``eps`` -> ``diffusion_eps``, param_fields.REQUEST_NAMES), any other
    name is the field itself (``messages.0.content`` keeps its tail); None when the request has no
    such field (a library-only argument such as ``canvas_length``)."""
    head, sep, tail = param.partition(".")
    field = REQUEST_NAMES.get(head, head)
    return field + sep + tail if field in _request_fields() else None


def from_value_error(exc: ValueError, fallback: str | None = None) -> APIError:
    """A library ValueError as a 400 validation error. A ParameterError names its field; any
    other ValueError is taken to be about ``fallback`` (what the caller was checking)."""
    param = request_field(exc.param) if isinstance(exc, ParameterError) else fallback
    return APIError("validation_error", str(exc), param=param, status=400)


def _field(loc: tuple[Any, ...]) -> str:
    """The field a pydantic error is about: its location without the leading "body" (or "query",
    "path"); a field may itself be called "path"."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return ".".join(parts) or "body"


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Pydantic errors → 422 naming the first offending field (all of them in the message)."""
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":  # loc is ("body", <character position>)
        loc = errors[0].get("loc", ())
        why = (errors[0].get("ctx") or {}).get("error", "JSON decode error")
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        return APIError("validation_error", f"the request body is not valid JSON ({why}{where})",
                        param="body").response()
    msgs = []
    for err in errors[:5]:
        msg = str(err.get("msg", "invalid value"))
        msgs.append(f"{_field(tuple(err.get('loc', ())))}: {msg.removeprefix('Value error, ')}")
    param = _field(tuple(errors[0].get("loc", ()))) if errors else None
    return APIError("validation_error", "; ".join(msgs) or "invalid request", param=param).response()


async def api_error_handler(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 413: "request_too_large"}.get(exc.status_code, "invalid_request")
    detail, param = str(exc.detail), None
    if exc.status_code == 413:
        param = "body"
    elif exc.status_code == 400 and detail == "There was an error parsing the body":
        detail, param = ("the request body could not be read as JSON (it must be UTF-8 text, nested at most "
                         "a few hundred levels deep)"), "body"
    body = APIError(code, detail, param=param, status=exc.status_code).body()
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback on the server, answered without one."""
    import logging

    logging.getLogger("hoshikage.server").error("unexpected error on %s %s", request.method, request.url.path,
                                                 exc_info=exc)
    return APIError("internal_error", f"internal server error ({type(exc).__name__}); the server log has "
                    "the details").response()
