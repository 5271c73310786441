"""Wrong keys are slowed per client: a burst, then 429 until the allowance refills; the right
key is refused too while a client is held back; other clients are not affected."""

from __future__ import annotations

import pytest

from inference_runtime.errors import RateLimited
from inference_runtime.gateway import key_throttle
from inference_runtime.gateway.key_throttle import BURST, REFILL_S, KeyThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_wrong_keys_then_429_until_one_try_comes_back() -> None:
    clock = Clock()
    throttle = KeyThrottle(clock=clock)
    for _ in range(BURST):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1")
    with pytest.raises(RateLimited) as limited:
        throttle.check("10.0.0.1")
    assert 0 < limited.value.retry_after <= REFILL_S
    throttle.check("10.0.0.2")  # another client is not slowed
    clock.now += REFILL_S
    throttle.check("10.0.0.1")  # one try came back
    throttle.failed("10.0.0.1")
    with pytest.raises(RateLimited):
        throttle.check("10.0.0.1")


def test_a_client_that_stops_guessing_is_forgotten_when_the_table_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(key_throttle, "_MAX_CLIENTS", 3)
    clock = Clock()
    throttle = KeyThrottle(clock=clock)
    for client in ("a", "b", "c"):
        throttle.failed(client)
    clock.now += BURST * REFILL_S  # all whole again
    throttle.failed("d")
    assert set(throttle._clients) == {"d"}
