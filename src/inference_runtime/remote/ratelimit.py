"""Client-side rate limits per (provider, api key, model): requests and tokens per minute.

A provider's limits belong to the key, so deployments sharing a key share one limiter
(:class:`RateLimiters`); staying under them turns a burst into short waits here instead of a
storm of upstream 429s that each cost a round trip and a backoff.

Two token buckets, each holding up to one minute's allowance and refilled continuously. An
admission *reserves* at once: it takes a request slot and the token estimate even if that drives
a bucket below zero, and then sleeps until the buckets would have covered it. Later arrivals see
the deeper deficit and wait longer, so admissions are first come, first served without a lock or a
wake-up loop, and the wait is computed from the clock, not polled. If the wait would pass the
deadline the reservation is undone and ``RateLimited`` carries the wait as Retry-After.

``Permit.settle(actual)`` corrects the estimate with the real usage: unused tokens go back, an
overshoot is charged (a deficit that delays the next admissions). An estimate above the whole
per-minute allowance is admitted when the bucket is full, rather than never; the rest is charged
when it settles.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from inference_runtime.errors import RateLimited
from inference_runtime.remote.settings import RateLimits

log = logging.getLogger("inference_runtime.remote")


class Fingerprinted(Protocol):
    """A key holder that names its key without revealing it (``types.Secret``)."""

    @property
    def fingerprint(self) -> str: ...


def api_key_fingerprint(api_key: str | Fingerprinted | None) -> str:
    """A short, stable, one-way name of a key (12 hex chars of its sha256, as
    ``Secret.fingerprint``) for registry keys, logs and metrics; ``"none"`` for a keyless
    upstream. The key itself never leaves here."""
    if api_key is None or api_key == "":
        return "none"
    if not isinstance(api_key, str):
        return api_key.fingerprint
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    name: str
    requests_available: float | None
    """Requests that could start now (negative: owed); None without a request limit."""
    tokens_available: float | None
    """Tokens that could be reserved now (negative: owed); None without a token limit."""
    admitted_total: int
    waited_total: int
    """Admissions that had to sleep first."""
    rejected_total: int


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, amount: float) -> float:
        """Take ``amount`` (refilled up to date first); seconds until it would have been there."""
        self.level -= amount
        return -self.level / self.rate if self.level < 0 else 0.0


class Permit:
    """One admitted request's reservation; settle it with the usage the upstream reported."""

    __slots__ = ("_limiter", "settled", "tokens", "waited_s")

    def __init__(self, limiter: RateLimiter, tokens: int, waited_s: float) -> None:
        self._limiter = limiter
        self.tokens = tokens
        """Tokens reserved (the estimate, or the whole allowance if it was larger)."""
        self.waited_s = waited_s
        self.settled = False

    def settle(self, actual_tokens: int) -> None:
        """Return unused tokens or charge the overshoot. Only the first call counts, so a
        cleanup path may settle again safely. The request slot stays spent: the upstream saw it.
        A request that never reached the upstream settles with 0."""
        if self.settled:
            return
        self.settled = True
        self._limiter._give_back_tokens(self.tokens - max(0, actual_tokens))


class RateLimiter:
    def __init__(
        self,
        limits: RateLimits,
        *,
        clock: Callable[[], float],
        name: str = "upstream",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` gives seconds; ``sleep`` waits that many on the same scale (tests pass a
        sleep that advances a ``ManualClock``)."""
        self.name = name
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        now = clock()
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self._requests = _Bucket(rpm, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, now) if tpm is not None else None
        self._admitted = 0
        self._waited = 0
        self._rejected = 0

    async def acquire(self, tokens: int, *, deadline: float | None) -> Permit:
        """Admit a request estimated at ``tokens``, sleeping until both limits allow it.

        ``deadline`` is on the clock's scale; ``None`` means no time to wait: the call is then
        admitted only if it fits now (like :meth:`try_acquire`, but raising). Raises
        ``RateLimited`` with ``retry_after`` = the wait needed when it would pass the deadline.
        Cancelled while sleeping, the reservation is given back.
        """
        now = self._clock()
        reserved, wait = self._reserve(tokens, now)
        limit = now if deadline is None else deadline
        if wait > 0 and now + wait > limit:  # what fits now is admitted, whatever the deadline
            message = f"rate limit of {self.name} reached ({self._binding()}); retry in {wait:.3g}s"
            self._undo(reserved)
            self._rejected += 1
            raise RateLimited(message, retry_after=wait)
        self._admitted += 1
        if wait > 0:
            self._waited += 1
            try:
                await self._sleep(wait)
            except BaseException:
                self._undo(reserved)
                self._admitted -= 1
                raise
        return Permit(self, reserved, wait)

    def try_acquire(self, tokens: int) -> Permit | None:
        """Admit now without waiting, or return None (nothing is taken)."""
        now = self._clock()
        reserved, wait = self._reserve(tokens, now)
        if wait > 0:
            self._undo(reserved)
            self._rejected += 1
            return None
        self._admitted += 1
        return Permit(self, reserved, 0.0)

    def statistics(self) -> RateLimiterStats:
        now = self._clock()
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)
        return RateLimiterStats(
            name=self.name,
            requests_available=None if self._requests is None else self._requests.level,
            tokens_available=None if self._tokens is None else self._tokens.level,
            admitted_total=self._admitted,
            waited_total=self._waited,
            rejected_total=self._rejected,
        )

    def _reserve(self, tokens: int, now: float) -> tuple[int, float]:
        if tokens < 0:
            raise ValueError("tokens: must be >= 0")
        wait = 0.0
        if self._requests is not None:
            self._requests.refill(now)
            wait = self._requests.take(1.0)
        reserved = tokens
        if self._tokens is not None:
            reserved = min(tokens, int(self._tokens.capacity))
            self._tokens.refill(now)
            wait = max(wait, self._tokens.take(reserved))
        return reserved, wait

    def _undo(self, reserved: int) -> None:
        if self._requests is not None:
            self._requests.level = min(self._requests.capacity, self._requests.level + 1.0)
        if self._tokens is not None:
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + reserved)

    def _give_back_tokens(self, amount: int) -> None:
        if self._tokens is not None and amount != 0:
            self._tokens.refill(self._clock())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + amount)

    def _binding(self) -> str:
        requests = self._requests is not None and self._requests.level < 0
        tokens = self._tokens is not None and self._tokens.level < 0
        parts = ["requests per minute"] * requests + ["tokens per minute"] * tokens
        return " and ".join(parts) or "limit"


class RateLimiters:
    """The limiters of one runtime, one per (provider, api key fingerprint, model)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` defaults to ``time.monotonic``, the scale ``asyncio.sleep`` waits on."""
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[tuple[str, str, str], RateLimiter] = {}

    def get(
        self,
        provider: str,
        api_key: str | Fingerprinted | None,
        model: str,
        limits: RateLimits,
    ) -> RateLimiter:
        """The shared limiter. ``api_key``: the key (hashed here, never stored) or a holder
        with a ``fingerprint``. The first deployment to ask sets the limits (they are the
        provider's limits of the key, so every deployment should state the same ones)."""
        key = (provider, api_key_fingerprint(api_key), model)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = RateLimiter(
                limits,
                clock=self._clock,
                name=f"{provider}/{model} key {key[1]}",
                sleep=self._sleep,
            )
            self._limiters[key] = limiter
        elif limiter.limits != limits:
            log.warning(
                "rate limits for %s differ between deployments; keeping the first: %s",
                limiter.name,
                limiter.limits,
            )
        return limiter

    def statistics(self) -> dict[tuple[str, str, str], RateLimiterStats]:
        return {key: limiter.statistics() for key, limiter in self._limiters.items()}
