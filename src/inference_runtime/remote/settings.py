"""Config of a remote deployment's resilience: retries, circuit breaker, rate limits, timeouts.

Plain msgspec Structs so they decode from the YAML config with unknown keys refused (a typo is an
error, not a silently ignored setting). msgspec checks types only when decoding, so the rules are
checked again in ``__post_init__`` for values built in code; each message names the field as it
is written in the config (``retry.max_retries``) and the rule it broke.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

Jitter = Literal["full", "equal", "none"]
JITTER_MODES: tuple[str, ...] = ("full", "equal", "none")


def _rule(field: str, rule: str) -> ValueError:
    return ValueError(f"{field}: {rule}")


def _positive(field: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise _rule(field, "must be a finite number > 0")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often and how patiently an upstream call is tried again (see ``retry.backoff_delay``)."""

    max_retries: int = 3
    """Retries after the first attempt (0 turns retries off); the first token ends them anyway."""
    initial_backoff_s: float = 0.5
    """Delay before the first retry, before jitter: long enough to let a blip pass."""
    max_backoff_s: float = 30.0
    """Cap on any single delay, a server's Retry-After included: a request never sleeps longer."""
    multiplier: float = 2.0
    """Growth of the delay per retry (exponential backoff spreads a thundering herd)."""
    jitter: Jitter = "full"
    """``full``: uniform in [0, delay]; ``equal``: delay/2 + uniform in [0, delay/2]; ``none``:
    exact delay. Jitter keeps many clients that failed together from retrying together."""
    respect_retry_after: bool = True
    """Use the upstream's Retry-After when it is longer than our own delay (still capped)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise _rule("retry.max_retries", "must be an integer")
        if self.max_retries < 0:
            raise _rule("retry.max_retries", "must be >= 0")
        _positive("retry.initial_backoff_s", self.initial_backoff_s)
        _positive("retry.max_backoff_s", self.max_backoff_s)
        if self.max_backoff_s < self.initial_backoff_s:
            raise _rule("retry.max_backoff_s", "must be >= retry.initial_backoff_s")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise _rule("retry.multiplier", "must be a finite number >= 1")
        if self.jitter not in JITTER_MODES:
            raise _rule("retry.jitter", f"must be one of {', '.join(JITTER_MODES)}")


class CircuitBreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When to stop calling an upstream that keeps failing, and how to find out it is back."""

    failure_threshold: int = 5
    """Consecutive failure events (5xx, timeouts, broken connections) that open the circuit;
    the failures of requests that were in flight together count as one event."""
    open_duration_s: float = 30.0
    """The longest an open circuit fails requests at once before letting probes through: the
    first opening lasts ``initial_open_duration_s``, each re-opening (a failed probe, or a new
    opening before the circuit stayed closed this long) twice the last, up to this."""
    initial_open_duration_s: float = 1.0
    """How long the first opening lasts (capped by ``open_duration_s``): an upstream that
    restarts in a second is called again a second later."""
    half_open_probes: int = 1
    """Requests let through at once while half-open; this many successes close the circuit."""

    def __post_init__(self) -> None:
        if isinstance(self.failure_threshold, bool) or not isinstance(self.failure_threshold, int):
            raise _rule("circuit_breaker.failure_threshold", "must be an integer")
        if self.failure_threshold < 1:
            raise _rule("circuit_breaker.failure_threshold", "must be >= 1")
        _positive("circuit_breaker.open_duration_s", self.open_duration_s)
        _positive("circuit_breaker.initial_open_duration_s", self.initial_open_duration_s)
        if isinstance(self.half_open_probes, bool) or not isinstance(self.half_open_probes, int):
            raise _rule("circuit_breaker.half_open_probes", "must be an integer")
        if self.half_open_probes < 1:
            raise _rule("circuit_breaker.half_open_probes", "must be >= 1")


class RateLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The provider's per-minute limits for one (provider, api key, model); ``null`` = none.

    Enforcing them here turns a burst into short waits instead of a storm of upstream 429s.
    """

    requests_per_minute: int | None = 500
    """Requests admitted per rolling minute (a token bucket refilled continuously)."""
    tokens_per_minute: int | None = 200_000
    """Prompt plus completion tokens per minute: estimated at admission, settled with usage."""

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise _rule(f"rate_limits.{name}", "must be an integer or null")
            if value < 1:
                raise _rule(f"rate_limits.{name}", "must be >= 1 (or null for no limit)")


class Timeouts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Deadlines of one upstream call; any of them passing is a retryable 504."""

    connect_s: float = 5.0
    """Opening a connection (TCP + TLS): a dead host is noticed fast."""
    first_byte_s: float = 60.0
    """From sending the request to the first response byte: covers the upstream's prefill."""
    read_s: float = 30.0
    """Longest silence between two chunks of a response: a stalled stream is cut."""

    def __post_init__(self) -> None:
        _positive("timeouts.connect_s", self.connect_s)
        _positive("timeouts.first_byte_s", self.first_byte_s)
        _positive("timeouts.read_s", self.read_s)
