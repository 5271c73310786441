"""Who may call what: Bearer API keys on ``/v1/*``, the admin key on ``/admin/*`` (an API key
there is 403: known, but not for this), a requests-per-minute limit per API key, and wrong keys
slowed per client (``key_throttle``).

Keys are compared in constant time: every configured key is compared (no early exit) on
SHA-256 digests (equal lengths), so neither the position nor the length of a key leaks.
Health, readiness, metrics and the OpenAPI document stay open (probes and scrapers).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Callable

from aiohttp import web

from inference_runtime.config import AuthConfig, read_keys
from inference_runtime.errors import AuthenticationFailed, PermissionDenied, RateLimited
from inference_runtime.gateway.key_throttle import KeyThrottle
from inference_runtime.gateway.token_bucket import TokenBucket
from inference_runtime.types import Secret


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class Authenticator:
    """Built once at start from :class:`AuthConfig` (key files and variables are read then)."""

    def __init__(self, config: AuthConfig, *, host: str, clock: Callable[[], float]) -> None:
        try:
            api = read_keys(
                inline=config.api_keys, env=config.api_keys_env, file=config.api_keys_file
            )
            admin = read_keys(
                inline=(config.admin_key,) if config.admin_key else (),
                env=config.admin_key_env,
                file=config.admin_key_file,
            )
        except ValueError as error:
            raise ValueError(f"auth: {error}") from None
        if len(admin) > 1:
            raise ValueError(
                "auth: give one admin key (admin_key, admin_key_env or admin_key_file)"
            )
        if not api and not is_loopback(host) and not config.allow_unauthenticated:
            raise ValueError(
                f"auth: refusing to serve on {host} (not a loopback address) with no API key; "
                "configure auth.api_keys_env / api_keys_file, or set "
                "auth.allow_unauthenticated: true (--allow-unauthenticated) to do it anyway"
            )
        self._api = [(_digest(k.reveal()), k) for k in api]
        self._admin = [_digest(k.reveal()) for k in admin]
        self._rate = config.requests_per_minute
        self._clock = clock
        self._buckets: dict[bytes, TokenBucket] = {}
        self._throttle = KeyThrottle(clock=clock)

    @property
    def open(self) -> bool:
        """No key at all: a development server on loopback."""
        return not self._api and not self._admin

    def _bearer(self, request: web.Request) -> bytes | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return _digest(token.strip())

    def check(self, request: web.Request) -> None:
        path = request.path
        if path.startswith("/v1/") or path == "/v1":
            self._check_api(request)
        elif path.startswith("/admin/") or path == "/admin":
            self._check_admin(request)

    def _check_api(self, request: web.Request) -> None:
        if not self._api:
            return
        given = self._bearer(request)
        if given is None:
            raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
        client = request.remote or ""
        self._throttle.check(client)
        if self._api_key(given) is None:
            self._throttle.failed(client)
            raise AuthenticationFailed("incorrect API key provided")
        if self._rate is not None:
            self._spend(given)

    def _api_key(self, given: bytes) -> Secret | None:
        found: Secret | None = None
        for digest, key in self._api:  # every key compared: no early exit
            if hmac.compare_digest(given, digest):
                found = key
        return found

    def _spend(self, digest: bytes) -> None:
        assert self._rate is not None
        now = self._clock()
        bucket = self._buckets.get(digest)
        if bucket is None:  # a minute's worth of requests as the burst
            bucket = self._buckets[digest] = TokenBucket(
                capacity=float(self._rate), per_second=self._rate / 60.0, now=now
            )
        if bucket.refill(now) < 1.0:
            wait = bucket.wait()
            raise RateLimited(
                f"rate limit of {self._rate} requests per minute for this API key reached; "
                f"retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
        bucket.level -= 1.0

    def _check_admin(self, request: web.Request) -> None:
        if not self._admin:
            if self._api:
                raise PermissionDenied(
                    "the admin API is disabled: API keys are configured but no admin key "
                    "(set auth.admin_key_env or auth.admin_key_file)"
                )
            return
        given = self._bearer(request)
        if given is None:
            raise AuthenticationFailed(
                "missing admin key: send it as 'Authorization: Bearer <admin key>'"
            )
        client = request.remote or ""
        self._throttle.check(client)
        ok = False
        for digest in self._admin:
            ok |= hmac.compare_digest(given, digest)
        if ok:
            return
        if self._api_key(given) is not None:
            raise PermissionDenied(
                "this is an API key: the admin API takes the admin key "
                "('Authorization: Bearer <admin key>')"
            )
        self._throttle.failed(client)
        raise AuthenticationFailed("incorrect admin key provided")
