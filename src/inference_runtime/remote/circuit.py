"""Circuit breaker per (provider, endpoint): stop calling an upstream that keeps failing.

While an upstream is down, every call would wait for a timeout and then fail; an open circuit
fails it in microseconds instead (503 with Retry-After, or the deployment's fallbacks), and
takes the load off the upstream while it recovers.

Failures are counted as *events*, not requests: the failures of requests that were in flight
together (admitted before the last failure that counted) are one event, so an upstream that
restarts under 20 concurrent requests counts one failure, not 20. ``failure_threshold``
consecutive events open the circuit. An opening lasts ``initial_open_duration_s`` at first and
doubles each time the circuit opens again without having stayed closed for
``open_duration_s`` in between, up to ``open_duration_s``: a blip costs a second, an upstream
that stays down is left alone for the full duration. After the opening the circuit goes
half-open and lets ``half_open_probes`` requests through at a time: that many successes close
it, one failure opens it again (for the next, longer, duration).

Only upstream-health failures count (``Classification.counts_for_breaker``: 5xx, timeouts,
broken connections); a 400 is a healthy upstream refusing a bad request and counts as a success.
A request that ends without a verdict (the client went away) calls :meth:`release` so that a
half-open probe slot is not lost. The breaker is plain synchronous code on the event loop: no
locks, no awaits; the time source is injected (``clock.now`` of the actor system in production,
``ManualClock.now`` in tests). Open-to-half-open happens lazily, when the breaker is next used.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from inference_runtime.errors import CircuitOpen
from inference_runtime.remote.settings import CircuitBreakerConfig

log = logging.getLogger("inference_runtime.remote")

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"
HALF_OPEN_RETRY_AFTER_S = 1.0
"""Retry-After of a request refused while the probes are out: about one request's latency."""

OnChange = Callable[[str, str, str], None]
"""``on_change(name, old_state, new_state)``: metrics and logs of state changes."""


@dataclass(frozen=True, slots=True)
class CircuitStats:
    name: str
    state: State
    consecutive_failures: int
    opened_total: int
    """Times the circuit opened (a failed probe re-opening it counts)."""
    rejected_total: int
    """Requests failed fast while open or while half-open probes were out."""


class CircuitBreaker:
    __slots__ = (
        "_admitted",
        "_clock",
        "_closed_at",
        "_config",
        "_counted_at",
        "_duration",
        "_failures",
        "_on_change",
        "_open_message",
        "_opened_at",
        "_opened_total",
        "_openings",
        "_probe_successes",
        "_probes_out",
        "_rejected_total",
        "_state",
        "name",
    )

    def __init__(
        self,
        config: CircuitBreakerConfig,
        *,
        name: str,
        clock: Callable[[], float],
        on_change: OnChange | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._state: State = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_out = 0
        self._probe_successes = 0
        self._opened_total = 0
        self._rejected_total = 0
        self._admitted = 0
        """Requests admitted so far: the ticket :meth:`before_request` hands out."""
        self._counted_at = 0
        """``_admitted`` when the last failure was counted: a failure of a request admitted by
        then was in flight with that one, the same event."""
        self._openings = 0
        """Openings since the circuit last stayed closed for ``open_duration_s``."""
        self._duration = config.open_duration_s
        """Length of the current (or last) opening."""
        self._closed_at = -math.inf
        # Built once: rejecting must not format strings on the fast path.
        self._open_message = f"circuit breaker for {name} is open: upstream failing, not called"

    @property
    def state(self) -> State:
        """The current state (an open circuit whose duration is over reads as half-open)."""
        if self._state == OPEN:
            self._maybe_half_open()
        return self._state

    def before_request(self) -> int:
        """Admit a request or raise ``CircuitOpen`` (with Retry-After) at once. Returns the
        request's ticket, for :meth:`record_failure`."""
        state = self._state
        if state == CLOSED:
            self._admitted += 1
            return self._admitted
        if state == OPEN and not self._maybe_half_open():
            self._rejected_total += 1
            remaining = self._opened_at + self._duration - self._clock()
            raise CircuitOpen(self._open_message, retry_after=remaining)
        if self._probes_out >= self._config.half_open_probes:
            self._rejected_total += 1
            raise CircuitOpen(self._open_message, retry_after=HALF_OPEN_RETRY_AFTER_S)
        self._probes_out += 1
        self._admitted += 1
        return self._admitted

    def record_success(self) -> None:
        """The upstream answered (any answer that does not count against its health)."""
        if self._state == CLOSED:
            self._failures = 0
        elif self._state == HALF_OPEN:
            self._release_probe()
            self._probe_successes += 1
            if self._probe_successes >= self._config.half_open_probes:
                self._failures = 0
                self._transition(CLOSED)
        # While open: a straggler admitted before the circuit opened; it proves little.

    def record_failure(self, ticket: int | None = None) -> None:
        """An upstream-health failure of the request admitted with ``ticket`` (None: a new
        event): counts toward opening unless it was in flight with the last failure that
        counted; re-opens from half-open."""
        if self._state == CLOSED:
            if ticket is not None and ticket <= self._counted_at:
                return  # failed together with the one that counted: the same event
            self._counted_at = self._admitted
            self._failures += 1
            if self._failures >= self._config.failure_threshold:
                self._open()
        elif self._state == HALF_OPEN:
            if ticket is not None and ticket <= self._counted_at:
                return  # admitted before the circuit opened: a straggler, not a probe
            self._release_probe()
            self._failures += 1
            self._open()

    def release(self) -> None:
        """A request admitted by :meth:`before_request` ended without a verdict (cancelled)."""
        if self._state == HALF_OPEN:
            self._release_probe()

    def statistics(self) -> CircuitStats:
        return CircuitStats(
            name=self.name,
            state=self.state,
            consecutive_failures=self._failures,
            opened_total=self._opened_total,
            rejected_total=self._rejected_total,
        )

    def _release_probe(self) -> None:
        if self._probes_out > 0:
            self._probes_out -= 1

    def _maybe_half_open(self) -> bool:
        if self._clock() - self._opened_at < self._duration:
            return False
        self._transition(HALF_OPEN)
        return True

    def _open(self) -> None:
        now = self._clock()
        config = self._config
        if self._state == CLOSED and now - self._closed_at >= config.open_duration_s:
            self._openings = 0  # it stayed closed long enough: this is a new outage
        self._duration = min(
            config.open_duration_s,
            config.initial_open_duration_s * 2.0 ** min(self._openings, 64),
        )
        self._openings += 1
        self._opened_at = now
        self._opened_total += 1
        self._counted_at = self._admitted
        self._transition(OPEN)

    def _transition(self, new: State) -> None:
        old = self._state
        self._state = new
        self._probes_out = 0
        self._probe_successes = 0
        if old == new:
            return
        if new == CLOSED:
            self._closed_at = self._clock()
        level = logging.WARNING if new == OPEN else logging.INFO
        log.log(
            level,
            "circuit %s: %s -> %s (consecutive failures %d)%s",
            self.name,
            old,
            new,
            self._failures,
            f", for {self._duration:g} s" if new == OPEN else "",
        )
        if self._on_change is not None:
            try:
                self._on_change(self.name, old, new)
            except Exception:  # a metrics hook must not break the request path
                log.exception("circuit %s: on_change hook failed", self.name)


class CircuitBreakers:
    """The breakers of one runtime, one per (provider, endpoint), shared by every deployment
    (and every replica) that calls the same endpoint: they all see the same upstream health."""

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: OnChange | None = None,
    ) -> None:
        """``clock`` defaults to ``time.monotonic``, the event loop's own time source."""
        self._config = config or CircuitBreakerConfig()
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(
        self,
        provider: str,
        endpoint: str,
        config: CircuitBreakerConfig | None = None,
        *,
        on_change: OnChange | None = None,
    ) -> CircuitBreaker:
        """The shared breaker of ``(provider, endpoint)``. ``config`` and ``on_change`` (else
        the registry's) apply when it is created: the first deployment to ask sets them."""
        key = (provider, endpoint)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                config or self._config,
                name=f"{provider} {endpoint}",
                clock=self._clock,
                on_change=on_change or self._on_change,
            )
            self._breakers[key] = breaker
        return breaker

    def statistics(self) -> dict[tuple[str, str], CircuitStats]:
        return {key: breaker.statistics() for key, breaker in self._breakers.items()}
