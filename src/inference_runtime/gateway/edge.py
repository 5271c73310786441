"""What a request must look like before any handler sees it: a JSON body, a ``Host`` this
server answers to, and no foreign ``Origin``.

These close the browser's ways in: a cross-site page may send a "simple" request (a
``text/plain`` POST needs no CORS preflight) and a DNS-rebinding page reaches a loopback server
under its own host name. Both are refused here, for ``/v1`` and ``/admin`` alike. Every request
pays for these checks, so each is a lookup in a small per-value cache of verdicts; the parsing
runs once per distinct header value.

An origin that is accepted (a loopback page on a loopback server, or one in
``gateway.allowed_origins``) gets what a browser needs to use the API from it: its CORS
preflight answered, and ``Access-Control-Allow-Origin`` on every answer. No credentials mode:
the API key travels in ``Authorization``, which a page sets itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from inference_runtime.config import GatewayConfig
from inference_runtime.errors import PermissionDenied, UnsupportedMediaType
from inference_runtime.gateway.auth import is_loopback

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_BODY_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "identity"})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
_CORS_EXPOSED = (
    "X-Replica-Id, Retry-After, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
    "x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, "
    "x-ratelimit-reset-tokens"
)
_PREFLIGHT_MAX_AGE_S = "600"
_CACHE_LIMIT = 1024
"""Distinct header values remembered per check; past it the cache starts over (a client that
varies its headers only costs itself the parsing)."""


def _host_name(authority: str) -> str:
    """``example.com:8080`` -> ``example.com``; ``[::1]:8080`` -> ``::1``."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    if authority.count(":") == 1:
        return authority.partition(":")[0]
    return authority


def _is_json(content_type: str) -> bool:
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json"


class _Verdicts:
    """A bounded cache of a pure check's answers, keyed by the raw header value."""

    __slots__ = ("_check", "_seen")

    def __init__(self, check: Callable[[str], bool]) -> None:
        self._check = check
        self._seen: dict[str, bool] = {}

    def __call__(self, value: str) -> bool:
        verdict = self._seen.get(value)
        if verdict is None:
            if len(self._seen) >= _CACHE_LIMIT:
                self._seen.clear()
            verdict = self._seen[value] = self._check(value)
        return verdict


class EdgePolicy:
    """Built from :class:`GatewayConfig`; :meth:`check` raises the error a request gets."""

    def __init__(self, config: GatewayConfig) -> None:
        self._loopback = is_loopback(config.host)
        bound = _host_name(config.host)
        self._hosts = frozenset({bound, *(_host_name(h) for h in config.allowed_hosts)})
        self._any_host = not self._loopback and not config.allowed_hosts
        self._origins = frozenset(o.rstrip("/").lower() for o in config.allowed_origins)
        self._host_ok = _Verdicts(self._accepts_host)
        self._json = _Verdicts(_is_json)
        self._origin_ok: dict[tuple[str, str], bool] = {}

    def check(self, request: web.Request) -> None:
        headers = request.headers
        host = headers.get("Host", "")
        if not self._any_host and not self._host_ok(host):
            raise PermissionDenied(
                f"Host {host!r} is not an address of this server "
                "(add it to gateway.allowed_hosts to accept it)"
            )
        origin = headers.get("Origin")
        if origin is not None and not self._accepts_origin(origin, host):
            raise PermissionDenied(
                f"Origin {origin!r} may not call this server "
                "(add it to gateway.allowed_origins to accept it)"
            )
        if request.method in _BODY_METHODS and request.body_exists:
            content_type = headers.get("Content-Type", "")
            if not self._json(content_type):
                raise UnsupportedMediaType(
                    f"Content-Type {content_type or '(none)'!r} is not accepted: send the body "
                    "as application/json"
                )
            encoding = headers.get("Content-Encoding")
            if encoding is not None and encoding.strip().lower() not in _BODY_ENCODINGS:
                # read as it is, an encoding we cannot undo would be taken for the JSON itself
                raise UnsupportedMediaType(
                    f"Content-Encoding {encoding!r} is not accepted: send the body as is, or "
                    "gzip or deflate it"
                )

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to an accepted origin's CORS preflight (``check`` has refused a foreign
        one); None when the request is not a preflight."""
        headers = request.headers
        origin = headers.get("Origin")
        if origin is None or "Access-Control-Request-Method" not in headers:
            return None
        asked = headers.get("Access-Control-Request-Headers", "")
        names = [n.strip() for n in asked.split(",") if _HEADER_NAME.fullmatch(n.strip())]
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _CORS_METHODS,
                "Access-Control-Allow-Headers": ", ".join(names),
                "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE_S,
                "Vary": "Origin",
            },
        )

    async def allow_origin(self, request: web.Request, response: web.StreamResponse) -> None:
        """(aiohttp's ``on_response_prepare``) An accepted origin may read the answer."""
        origin = request.headers.get("Origin")
        if origin is None or "Access-Control-Allow-Origin" in response.headers:
            return
        if self._accepts_origin(origin, request.headers.get("Host", "")):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED
            response.headers["Vary"] = "Origin"

    def _accepts_host(self, host: str) -> bool:
        name = _host_name(host)
        # a rebinding page's Host is its own domain name: never an address (a client, a
        # probe, that addressed this server by IP) and never a loopback name
        return name in self._hosts or _is_address(name) or _is_loopback_name(name)

    def _accepts_origin(self, origin: str, host: str) -> bool:
        key = (origin, host)
        verdict = self._origin_ok.get(key)
        if verdict is None:
            if len(self._origin_ok) >= _CACHE_LIMIT:
                self._origin_ok.clear()
            verdict = self._origin_ok[key] = self._judge_origin(origin, host)
        return verdict

    def _judge_origin(self, origin: str, host: str) -> bool:
        normal = origin.strip().rstrip("/").lower()
        if normal in self._origins or "*" in self._origins:
            return True
        try:
            parts = urlsplit(normal)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed or file page) and the like
        if parts.netloc == host.strip().lower():
            return True  # the server's own origin: a page it served itself
        return self._loopback and _is_loopback_name(_host_name(parts.netloc))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback_name(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)
