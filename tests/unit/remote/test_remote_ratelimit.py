"""Rate limiter on a manual clock: requests and tokens per minute, waits, settle, registry."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import pytest

from inference_runtime.errors import RateLimited
from inference_runtime.remote import (
    RateLimiter,
    RateLimiters,
    RateLimits,
    api_key_fingerprint,
)
from inference_runtime.testing import ManualClock


def clock_sleep(clock: ManualClock) -> Callable[[float], Awaitable[None]]:
    """An ``asyncio.sleep`` that ends when the test advances the manual clock far enough."""

    async def sleep(delay: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        clock.call_later(delay, wake)
        await done

    return sleep


def limiter(clock: ManualClock, rpm: int | None = None, tpm: int | None = None) -> RateLimiter:
    limits = RateLimits(requests_per_minute=rpm, tokens_per_minute=tpm)
    return RateLimiter(limits, clock=clock.now, name="openai/gpt", sleep=clock_sleep(clock))


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_requests_per_minute() -> None:
    clock = ManualClock()
    limit = limiter(clock, rpm=60)
    assert all(limit.try_acquire(0) is not None for _ in range(60))
    assert limit.try_acquire(0) is None
    clock.advance(0.99)
    assert limit.try_acquire(0) is None
    clock.advance(0.01)  # one request per second comes back
    assert limit.try_acquire(0) is not None
    assert limit.try_acquire(0) is None


def test_tokens_per_minute_refill_continuously() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=600)  # 10 tokens a second
    assert limit.try_acquire(600) is not None
    assert limit.try_acquire(1) is None
    clock.advance(0.5)
    assert limit.try_acquire(5) is not None
    assert limit.try_acquire(1) is None
    clock.advance(3600)  # refill stops at one minute's allowance
    assert limit.statistics().tokens_available == 600


def test_failed_try_takes_nothing() -> None:
    clock = ManualClock()
    limit = limiter(clock, rpm=2, tpm=100)
    assert limit.try_acquire(90) is not None
    assert limit.try_acquire(50) is None
    stats = limit.statistics()
    assert (stats.requests_available, stats.tokens_available) == (1, 10)
    assert (stats.admitted_total, stats.rejected_total) == (1, 1)


async def test_acquire_waits_until_both_fit() -> None:
    clock = ManualClock()
    limit = limiter(clock, rpm=60, tpm=600)
    await limit.acquire(500, deadline=None)  # fits now: no wait even without a deadline
    await limit.acquire(100, deadline=-1.0)  # fits now: admitted though the deadline passed
    task = asyncio.create_task(limit.acquire(100, deadline=60.0))  # tokens need 10 s
    await settle_loop()
    clock.advance(9.9)
    await settle_loop()
    assert not task.done()
    clock.advance(0.1)
    await settle_loop()
    permit = task.result()
    assert permit.waited_s == pytest.approx(10.0)
    assert permit.tokens == 100
    assert limit.statistics().waited_total == 1


async def test_deadline_too_close_raises_with_retry_after_and_takes_nothing() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=600)
    await limit.acquire(600, deadline=None)
    with pytest.raises(RateLimited) as info:
        await limit.acquire(100, deadline=5.0)
    assert info.value.retry_after == pytest.approx(10.0)
    assert "tokens per minute" in str(info.value)
    with pytest.raises(RateLimited):  # None: no time to wait at all
        await limit.acquire(1, deadline=None)
    clock.advance(10.0)
    assert limit.try_acquire(100) is not None  # the refused reservations were undone
    assert limit.statistics().rejected_total == 2


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=600)
    await limit.acquire(600, deadline=None)
    done: list[str] = []

    async def take(name: str, tokens: int) -> None:
        await limit.acquire(tokens, deadline=1000.0)
        done.append(name)

    big = asyncio.create_task(take("big", 300))  # 30 s
    await settle_loop()
    small = asyncio.create_task(take("small", 10))  # behind big: 31 s, not 1 s
    await settle_loop()
    clock.advance(1.0)
    await settle_loop()
    assert done == []
    clock.advance(29.0)
    await settle_loop()
    assert done == ["big"]
    clock.advance(1.0)
    await settle_loop()
    assert done == ["big", "small"]
    await asyncio.gather(big, small)


async def test_cancelled_waiter_gives_its_reservation_back() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=600)
    await limit.acquire(600, deadline=None)
    task = asyncio.create_task(limit.acquire(300, deadline=100.0))
    await settle_loop()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limit.statistics().tokens_available == 0  # the deficit of 300 is gone
    assert limit.statistics().admitted_total == 1


def test_settle_returns_unused_and_charges_overshoot() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=1000)
    permit = limit.try_acquire(500)
    assert permit is not None
    permit.settle(100)
    assert limit.statistics().tokens_available == 900
    permit.settle(0)  # only the first settle counts
    assert limit.statistics().tokens_available == 900
    over = limit.try_acquire(100)
    assert over is not None
    over.settle(1500)  # the upstream used far more than estimated: a deficit
    assert limit.statistics().tokens_available == -600
    assert limit.try_acquire(0) is None
    clock.advance(36.0)  # 600 tokens at 1000/min
    assert limit.try_acquire(0) is not None


def test_settle_never_overfills() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=1000)
    permit = limit.try_acquire(100)
    assert permit is not None
    clock.advance(60)
    permit.settle(0)
    assert limit.statistics().tokens_available == 1000


def test_estimate_above_allowance_is_admitted_on_a_full_bucket() -> None:
    clock = ManualClock()
    limit = limiter(clock, tpm=1000)
    permit = limit.try_acquire(5000)
    assert permit is not None and permit.tokens == 1000
    permit.settle(5000)  # the rest is charged when it is known
    assert limit.statistics().tokens_available == -4000


def test_no_limits_admit_everything() -> None:
    limit = limiter(ManualClock())
    assert all(limit.try_acquire(10**9) is not None for _ in range(1000))
    stats = limit.statistics()
    assert (stats.requests_available, stats.tokens_available) == (None, None)


def test_negative_estimate_is_refused() -> None:
    with pytest.raises(ValueError, match="tokens"):
        limiter(ManualClock(), tpm=10).try_acquire(-1)


async def test_real_sleep_by_default() -> None:
    limit = RateLimiter(RateLimits(tokens_per_minute=60_000), clock=time.monotonic)
    await limit.acquire(60_000, deadline=None)
    started = time.monotonic()
    permit = await limit.acquire(20, deadline=time.monotonic() + 5)  # 1000 tokens/s: 20 ms
    assert time.monotonic() - started >= 0.015
    assert permit.waited_s == pytest.approx(0.02, abs=0.005)


# -- the registry ---------------------------------------------------------------------------


def test_registry_shares_per_provider_key_and_model() -> None:
    clock = ManualClock()
    registry = RateLimiters(clock=clock.now)
    limits = RateLimits(requests_per_minute=1)
    first = registry.get("openai", "sk-team-a", "gpt-4o", limits)
    assert registry.get("openai", "sk-team-a", "gpt-4o", limits) is first
    assert registry.get("openai", "sk-team-b", "gpt-4o", limits) is not first
    assert registry.get("openai", "sk-team-a", "gpt-4o-mini", limits) is not first
    assert registry.get("azure", "sk-team-a", "gpt-4o", limits) is not first
    assert first.try_acquire(0) is not None
    # a second deployment on the same key sees the same exhausted limit
    assert registry.get("openai", "sk-team-a", "gpt-4o", RateLimits()).try_acquire(0) is None


def test_fingerprint_hides_the_key() -> None:
    key = "sk-live-0123456789abcdef"
    fingerprint = api_key_fingerprint(key)
    assert fingerprint == hashlib.sha256(key.encode()).hexdigest()[:12]
    assert key not in fingerprint and "0123456789" not in fingerprint
    assert api_key_fingerprint(None) == api_key_fingerprint("") == "none"

    class Held:
        fingerprint = "abc123abc123"

    assert api_key_fingerprint(Held()) == "abc123abc123"
    registry = RateLimiters(clock=ManualClock().now)
    limit = registry.get("openai", key, "gpt", RateLimits())
    assert key not in limit.name and fingerprint in limit.name
    assert all(key not in part for parts in registry.statistics() for part in parts)
    assert key not in repr(registry.statistics())
    assert ("openai", fingerprint, "gpt") in registry.statistics()
