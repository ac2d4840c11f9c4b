"""Who may do what: the API keys, local admin clients, the Host header, cross-site admin requests.

- The API: open, or with ``API_KEY`` that key (``ADMIN_API_KEY`` opens it too).
- Admin: ``ADMIN_API_KEY`` when set, else ``API_KEY`` when set, else a *local* client: the socket's
  peer (as uvicorn reports it, which believes forwarding headers only from ``TRUSTED_PROXIES``) is a
  loopback address and the request carries no forwarding header. Admin requests a browser sends
  cross-site (``Sec-Fetch-Site``, ``Origin``) are refused; without a key, admin POSTs also need
  ``Content-Type: application/json``, which a plain HTML form cannot send.
- Every request's Host header must name the server (``Settings.served_hosts``): DNS rebinding.
"""
from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from .errors import APIError
from .settings import Settings, host_name

# Headers a proxy adds; a request carrying one did not start on this machine's loopback.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def presented_key(request: Request) -> str:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    given = request.headers.get("authorization", "")
    return given[7:].strip() if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")


def _matches(token: str, key: str | None) -> bool:
    return bool(key) and hmac.compare_digest(token.encode(), key.encode())


def is_loopback_address(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or IPv4-mapped loopback; names (even "localhost") are not addresses."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def is_local_client(request: Request) -> bool:
    """The client is on this machine's loopback and no proxy says it forwarded the request."""
    if _forwarded(request):
        return False
    return is_loopback_address(request.client.host if request.client else None)


class Access:
    """The access rules of one server's settings, as FastAPI dependencies."""

    def __init__(self, settings: Settings):
        self.api_key = settings.api_key or None
        self.admin_api_key = settings.admin_api_key or None

    @property
    def admin_key(self) -> str | None:
        return self.admin_api_key or self.api_key

    def is_admin(self, request: Request) -> bool:
        """Would the admin endpoints accept this caller? (A browser's cross-site request never is:
        with CORS a page on an allowed origin can read what it is answered.)"""
        if cross_site_problem(request) is not None:
            return False
        key = self.admin_key
        return _matches(presented_key(request), key) if key else is_local_client(request)

    def require_key(self, request: Request) -> None:
        token = presented_key(request)
        if self.api_key and not (_matches(token, self.api_key) or _matches(token, self.admin_api_key)):
            raise APIError("invalid_api_key", "missing or wrong API key (send 'Authorization: Bearer <API_KEY>')")

    def require_admin(self, request: Request) -> None:
        key = self.admin_key
        if key and not _matches(presented_key(request), key):
            name = "ADMIN_API_KEY" if self.admin_api_key else "API_KEY"
            raise APIError("invalid_api_key", f"admin endpoints need 'Authorization: Bearer <{name}>'")
        if not key and not is_local_client(request):
            client = request.client.host if request.client else "unknown"
            raise APIError("forbidden", f"admin endpoints accept local clients only unless API_KEY or "
                           f"ADMIN_API_KEY is set (this client: {client}, "
                           f"{'through a proxy' if _forwarded(request) else 'not a loopback address'})")
        refuse_cross_site(request)
        if not key and request.method == "POST":
            require_json(request)


def _forwarded(request: Request) -> bool:
    return any(name in request.headers for name in FORWARDING_HEADERS)


def cross_site_problem(request: Request) -> str | None:
    """Why a request is a browser's request from another web origin, or None."""
    site = request.headers.get("sec-fetch-site", "").lower()
    if site and site not in ("same-origin", "none"):
        return f"a browser's request from another site (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
        return f"requests from another web origin (Origin: {origin})"
    return None


def refuse_cross_site(request: Request) -> None:
    """A browser sending an admin request from another web origin: 403."""
    problem = cross_site_problem(request)
    if problem is not None:
        raise APIError("forbidden", f"admin endpoints refuse {problem}")


def require_json(request: Request) -> None:
    """A plain HTML form cannot send ``Content-Type: application/json`` (it needs a CORS preflight)."""
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/json":
        raise APIError("forbidden", f"admin POSTs without a key need 'Content-Type: application/json' (got "
                       f"{ctype or 'none'}), so that a web page's form cannot send them")


class HostCheck:
    """ASGI middleware: a Host header that does not name this server gets 400 host_not_allowed
    (a page whose name was rebound to 127.0.0.1 sends its own name)."""

    def __init__(self, app: Any, allowed: set[str]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        problem = self.problem(scope) if scope["type"] in ("http", "websocket") else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        await APIError("host_not_allowed", problem, param="host").response()(scope, receive, send)

    def problem(self, scope: dict) -> str | None:
        """Why the request's Host is refused, or None."""
        if "*" in self.allowed:
            return None
        hosts = [value.decode("latin-1") for name, value in scope.get("headers") or [] if name == b"host"]
        names = ", ".join(sorted(self.allowed))
        if len(hosts) != 1:
            count = f"{len(hosts)} Host headers" if hosts else "no Host header"
            return f"the request has {count}; it needs one naming this server ({names})"
        if host_name(hosts[0]) in self.allowed:
            return None
        return (f"Host {hosts[0]!r} is not a name this server answers to ({names}); add it to ALLOWED_HOSTS "
                "if it should be (the check stops DNS-rebinding attacks)")
