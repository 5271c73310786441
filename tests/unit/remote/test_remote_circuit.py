"""Circuit breaker transitions on a manual clock: threshold, open, half-open probes, close;
failures in flight together count once; openings start short and grow."""

from __future__ import annotations

import inspect
import time

import pytest

from inference_runtime.errors import CircuitOpen
from inference_runtime.remote import CircuitBreaker, CircuitBreakerConfig, CircuitBreakers
from inference_runtime.testing import ManualClock

Changes = list[tuple[str, str, str]]


def state(circuit: CircuitBreaker) -> str:
    """The state, read afresh (a helper, so type checkers do not pin it after a comparison)."""
    return circuit.state


def breaker(clock: ManualClock, changes: Changes | None = None, **config: object) -> CircuitBreaker:
    defaults = {"failure_threshold": 3, "open_duration_s": 10.0, "initial_open_duration_s": 10.0}
    settings = CircuitBreakerConfig(**{**defaults, **config})  # type: ignore[arg-type]
    hook = None if changes is None else (lambda *change: changes.append(change))
    return CircuitBreaker(settings, name="openai /v1/chat", clock=clock.now, on_change=hook)


def trip(circuit: CircuitBreaker, times: int = 3) -> None:
    for _ in range(times):
        circuit.before_request()
        circuit.record_failure()


def test_threshold_of_consecutive_failures_opens() -> None:
    clock, changes = ManualClock(), Changes()
    circuit = breaker(clock, changes)
    trip(circuit, 2)
    circuit.record_success()  # a success resets the streak
    trip(circuit, 2)
    assert state(circuit) == "closed"
    assert circuit.statistics().consecutive_failures == 2
    trip(circuit, 1)
    assert state(circuit) == "open"
    assert changes == [("openai /v1/chat", "closed", "open")]


def test_open_rejects_at_once_with_retry_after_and_endpoint() -> None:
    clock = ManualClock()
    circuit = breaker(clock)
    trip(circuit)
    clock.advance(4.0)
    with pytest.raises(CircuitOpen) as info:
        circuit.before_request()
    assert info.value.retry_after == pytest.approx(6.0)
    assert "openai /v1/chat" in str(info.value)
    stats = circuit.statistics()
    assert (stats.state, stats.opened_total, stats.rejected_total) == ("open", 1, 1)


def test_rejection_is_synchronous_and_fast() -> None:
    assert not inspect.iscoroutinefunction(CircuitBreaker.before_request)
    circuit = breaker(ManualClock())
    trip(circuit)
    rounds = 10_000
    rejected = 0
    started = time.perf_counter()
    for _ in range(rounds):
        try:
            circuit.before_request()
        except CircuitOpen:
            rejected += 1
    per_call = (time.perf_counter() - started) / rounds
    assert rejected == rounds
    assert per_call < 50e-6  # microseconds, with a wide margin for slow CI machines


def test_half_open_after_duration_lets_probes_through() -> None:
    clock, changes = ManualClock(), Changes()
    circuit = breaker(clock, changes, half_open_probes=2)
    trip(circuit)
    clock.advance(10.0)
    assert state(circuit) == "half_open"
    circuit.before_request()
    circuit.before_request()
    with pytest.raises(CircuitOpen):  # a third would exceed the probe limit
        circuit.before_request()
    circuit.record_success()
    assert state(circuit) == "half_open"  # one success of two
    circuit.record_success()
    assert state(circuit) == "closed"
    assert changes == [
        ("openai /v1/chat", "closed", "open"),
        ("openai /v1/chat", "open", "half_open"),
        ("openai /v1/chat", "half_open", "closed"),
    ]
    assert circuit.statistics().consecutive_failures == 0
    circuit.before_request()  # closed: anything goes


def test_failed_probe_reopens_for_a_full_duration() -> None:
    clock, changes = ManualClock(), Changes()
    circuit = breaker(clock, changes)
    trip(circuit)
    clock.advance(10.0)
    circuit.before_request()
    circuit.record_failure()
    assert state(circuit) == "open"
    assert circuit.statistics().opened_total == 2
    clock.advance(9.9)
    with pytest.raises(CircuitOpen) as info:
        circuit.before_request()
    assert info.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    circuit.before_request()
    assert [change[1:] for change in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
    ]


def test_released_probe_frees_its_slot() -> None:
    clock = ManualClock()
    circuit = breaker(clock)
    trip(circuit)
    clock.advance(10.0)
    circuit.before_request()
    with pytest.raises(CircuitOpen):
        circuit.before_request()
    circuit.release()  # the probe's client went away: no verdict
    circuit.before_request()
    assert state(circuit) == "half_open"


def test_stragglers_while_open_change_nothing() -> None:
    clock, changes = ManualClock(), Changes()
    circuit = breaker(clock, changes)
    trip(circuit)
    circuit.record_success()
    circuit.record_failure()
    assert state(circuit) == "open"
    assert len(changes) == 1


def test_a_failing_hook_does_not_break_the_breaker() -> None:
    def hook(name: str, old: str, new: str) -> None:
        raise RuntimeError("metrics down")

    settings = CircuitBreakerConfig(failure_threshold=1)
    circuit = CircuitBreaker(settings, name="x", clock=ManualClock().now, on_change=hook)
    circuit.record_failure()
    assert state(circuit) == "open"


def test_registry_shares_one_breaker_per_provider_and_endpoint() -> None:
    clock, changes = ManualClock(), Changes()
    registry = CircuitBreakers(
        CircuitBreakerConfig(failure_threshold=1),
        clock=clock.now,
        on_change=lambda *change: changes.append(change),
    )
    first = registry.get("openai", "https://api.openai.com/v1")
    assert registry.get("openai", "https://api.openai.com/v1") is first
    other = registry.get("anthropic", "https://api.anthropic.com/v1")
    assert other is not first
    first.record_failure()
    assert state(registry.get("openai", "https://api.openai.com/v1")) == "open"
    assert state(other) == "closed"
    assert changes == [("openai https://api.openai.com/v1", "closed", "open")]
    stats = registry.statistics()
    assert stats[("openai", "https://api.openai.com/v1")].state == "open"


def test_registry_first_config_and_hook_win() -> None:
    registry = CircuitBreakers(clock=ManualClock().now)
    seen: Changes = []
    one = registry.get(
        "p", "e", CircuitBreakerConfig(failure_threshold=1), on_change=lambda *c: seen.append(c)
    )
    again = registry.get("p", "e", CircuitBreakerConfig(failure_threshold=9))
    assert again is one
    again.record_failure()
    assert state(one) == "open" and seen == [("p e", "closed", "open")]


def test_failures_in_flight_together_count_as_one_event() -> None:
    """20 requests in flight when the upstream restarts: one event, not 20 failures."""
    clock = ManualClock()
    circuit = breaker(clock)
    tickets = [circuit.before_request() for _ in range(20)]
    for ticket in tickets:
        circuit.record_failure(ticket)
    assert state(circuit) == "closed"
    assert circuit.statistics().consecutive_failures == 1
    # requests admitted after that failure fail on their own: each is an event again
    for _ in range(2):
        circuit.record_failure(circuit.before_request())
    assert state(circuit) == "open"


def test_openings_start_short_and_double_up_to_open_duration() -> None:
    clock = ManualClock()
    circuit = breaker(clock, initial_open_duration_s=1.0, open_duration_s=10.0)
    trip(circuit)
    lengths = []
    for _ in range(6):  # every probe fails: 1, 2, 4, 8, then the cap
        with pytest.raises(CircuitOpen) as info:
            circuit.before_request()
        lengths.append(info.value.retry_after)
        clock.advance(info.value.retry_after)
        circuit.record_failure(circuit.before_request())
    assert lengths == pytest.approx([1.0, 2.0, 4.0, 8.0, 10.0, 10.0])
    clock.advance(10.0)
    circuit.before_request()
    circuit.record_success()
    assert state(circuit) == "closed"
    clock.advance(3.0)  # opened again soon after closing: still the same outage
    trip(circuit)
    with pytest.raises(CircuitOpen) as again:
        circuit.before_request()
    assert again.value.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    circuit.before_request()
    circuit.record_success()
    clock.advance(10.0)  # closed for a whole open_duration_s: a new outage starts short
    trip(circuit)
    with pytest.raises(CircuitOpen) as fresh:
        circuit.before_request()
    assert fresh.value.retry_after == pytest.approx(1.0)


def test_a_straggler_failing_while_half_open_is_not_a_probe() -> None:
    clock = ManualClock()
    circuit = breaker(clock)
    straggler = circuit.before_request()
    trip(circuit)
    clock.advance(10.0)
    probe = circuit.before_request()
    circuit.record_failure(straggler)  # admitted before the circuit opened
    assert state(circuit) == "half_open"
    circuit.record_failure(probe)
    assert state(circuit) == "open"
