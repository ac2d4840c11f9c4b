"""CORS for the API (``/v1/...``): which web pages may call it from a browser (``CORS_ORIGINS``).

- An origin rule is ``scheme://host``, ``scheme://host:port`` or ``scheme://host:*`` (any port, or
  none), or ``*`` (every origin). The default, as Ollama's: ``http://localhost:*``,
  ``http://127.0.0.1:*`` and ``http://[::1]:*``.
- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from an allowed
  origin gets 204 with ``Access-Control-Allow-Origin`` (the origin), ``-Methods``, ``-Headers``
  (``Authorization``, ``Content-Type`` and the others it asks for) and ``-Max-Age``; from another
  origin, 403 ``forbidden`` without any ``Access-Control-*`` header, so the browser stops there.
- Other responses to an allowed origin carry ``Access-Control-Allow-Origin`` and ``Vary: Origin``;
  responses to other origins carry no CORS header (the browser hides them from the page).
- No credentials (cookies) are allowed: the API key is a header the page must send itself.
- ``/admin/...`` is never opened (its preflight falls through to 405 and its responses stay
  same-origin only; access.py refuses a browser's cross-site admin request).

The middleware runs inside the Host check (app.py), so a request whose Host is refused is refused
before CORS is considered, preflight or not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import APIError

CORS_PREFIX = "/v1/"  # the API; /admin, /docs and /openapi.json get no CORS headers
ALLOW_METHODS = "GET, POST, OPTIONS"
BASE_HEADERS = ("Authorization", "Content-Type", "X-API-Key")
MAX_AGE_S = "600"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # an HTTP token
MAX_ASKED_HEADERS = 32


@dataclass(frozen=True)
class OriginRule:
    scheme: str
    host: str  # lowercase, IPv6 without brackets
    port: int | None  # None: any port (":*")


def parse_rule(text: str) -> OriginRule | None:
    """One CORS_ORIGINS entry; None for ``*``. ValueError when it is not ``scheme://host[:port|:*]``."""
    entry = text.strip()
    if entry == "*":
        return None
    any_port = entry.endswith(":*")
    head = entry[:-2] if any_port else entry
    problem = f"CORS_ORIGINS entries are 'scheme://host', 'scheme://host:port', 'scheme://host:*' or '*', not {text!r}"
    try:
        parts = urlsplit(head)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(problem)
    if any_port and port is not None:
        raise ValueError(problem)
    return OriginRule(parts.scheme.lower(), parts.hostname.lower(), None if any_port else port or _default_port(parts.scheme))


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme.lower())


def parse_origin(origin: str) -> tuple[str, str, int | None] | None:
    """A browser's ``Origin`` as (scheme, host, port), or None when it is not ``scheme://host[:port]``
    (``null``, a path, credentials...)."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port or _default_port(parts.scheme)


class OriginPolicy:
    """The allowed origins of one server (CORS_ORIGINS)."""

    def __init__(self, entries: list[str]):
        rules = [parse_rule(e) for e in entries]
        self.allow_all = None in rules
        self.rules = [r for r in rules if r is not None]

    def allows(self, origin: str) -> bool:
        if self.allow_all:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        scheme, host, port = parsed
        return any(r.scheme == scheme and r.host == host and (r.port is None or r.port == port) for r in self.rules)

    def allow_origin_value(self, origin: str) -> str:
        return "*" if self.allow_all else origin


class CORS:
    """ASGI middleware applying an OriginPolicy to the API's paths."""

    def __init__(self, app: Any, origins: list[str]):
        self.app = app
        self.policy = OriginPolicy(origins)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(CORS_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.policy.allows(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, allowed, headers)(scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        value = self.policy.allow_origin_value(origin).encode("latin-1")

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"access-control-allow-origin", value), (b"vary", b"Origin")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _preflight(self, origin: str, allowed: bool, headers: dict[str, str]) -> Any:
        method = headers["access-control-request-method"].strip().upper()
        if not allowed:
            return APIError("forbidden", f"origin {origin[:200]!r} may not call this API from a browser; add it "
                            "to CORS_ORIGINS if it should", param="origin").response()
        if method not in ("GET", "POST"):
            return APIError("forbidden", f"CORS preflight for method {method[:20]!r}: the API allows GET and "
                            "POST", param="access-control-request-method").response()
        from starlette.responses import Response

        return Response(status_code=204, headers={
            "Access-Control-Allow-Origin": self.policy.allow_origin_value(origin),
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ", ".join(allowed_headers(headers.get("access-control-request-headers"))),
            "Access-Control-Max-Age": MAX_AGE_S,
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"})


def allowed_headers(asked: str | None) -> list[str]:
    """Authorization, Content-Type, X-API-Key, plus the header names a preflight asks for (HTTP tokens,
    at most MAX_ASKED_HEADERS; e.g. the openai JS SDK's X-Stainless-*): a header a page may set
    gives it nothing it could not send from curl."""
    names = list(BASE_HEADERS)
    known = {n.lower() for n in names}
    for name in (asked or "").split(",")[:MAX_ASKED_HEADERS]:
        name = name.strip()
        if _HEADER_NAME.match(name) and name.lower() not in known:
            names.append(name)
            known.add(name.lower())
    return names


def _headers(scope: dict) -> dict[str, str]:
    """The request's headers, lowercase names, the first value of each."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers") or []:
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out
