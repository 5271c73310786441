"""Backoff math per jitter mode, Retry-After (seconds and HTTP dates), and when to retry."""

from __future__ import annotations

import email.utils
import random

import pytest

from inference_runtime import errors
from inference_runtime.remote import (
    Action,
    Classification,
    RetryPolicy,
    backoff_delay,
    may_retry,
    parse_retry_after,
)

NOW = 1_700_000_000.0


def policy(**changes: object) -> RetryPolicy:
    return RetryPolicy(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempt", range(12))
def test_full_jitter_bounds(attempt: int) -> None:
    rng = random.Random(attempt)
    base = min(30.0, 0.5 * 2**attempt)
    samples = [backoff_delay(policy(), attempt, retry_after=None, rng=rng) for _ in range(200)]
    assert all(0.0 <= s <= base for s in samples)
    assert max(samples) > 0.8 * base  # the whole range is used, not just the bottom


@pytest.mark.parametrize("attempt", range(12))
def test_equal_jitter_bounds(attempt: int) -> None:
    rng = random.Random(attempt)
    base = min(30.0, 0.5 * 2**attempt)
    samples = [
        backoff_delay(policy(jitter="equal"), attempt, retry_after=None, rng=rng)
        for _ in range(200)
    ]
    assert all(base / 2 <= s <= base for s in samples)


def test_no_jitter_is_exact_exponential_and_capped() -> None:
    rng = random.Random(0)
    delays = [backoff_delay(policy(jitter="none"), n, retry_after=None, rng=rng) for n in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_huge_attempt_does_not_overflow() -> None:
    rng = random.Random(0)
    slow = policy(jitter="none", multiplier=10.0)
    assert backoff_delay(slow, 10_000, retry_after=None, rng=rng) == 30.0


def test_seeded_rng_is_deterministic() -> None:
    first = [backoff_delay(policy(), n, retry_after=None, rng=random.Random(7)) for n in range(5)]
    again = [backoff_delay(policy(), n, retry_after=None, rng=random.Random(7)) for n in range(5)]
    assert first == again


def test_retry_after_wins_when_larger_and_is_capped() -> None:
    rng = random.Random(1)
    assert backoff_delay(policy(jitter="none"), 0, retry_after=5.0, rng=rng) == 5.0
    assert backoff_delay(policy(jitter="none"), 0, retry_after=3600.0, rng=rng) == 30.0
    # smaller than our own delay: ours stands
    assert backoff_delay(policy(jitter="none"), 3, retry_after=0.1, rng=rng) == 4.0


def test_retry_after_ignored_when_not_respected() -> None:
    rng = random.Random(1)
    ignoring = policy(jitter="none", respect_retry_after=False)
    assert backoff_delay(ignoring, 0, retry_after=20.0, rng=rng) == 0.5


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(policy(), -1, retry_after=None, rng=random.Random())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        (email.utils.formatdate(NOW + 42, usegmt=True), 42.0),
        ("Tue, 14 Nov 2023 22:13:30 GMT", 10.0),
        ("Tue, 14 Nov 2023 22:13:30 -0000", 10.0),  # a date without a zone is GMT
        (email.utils.formatdate(NOW - 100, usegmt=True), 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    parsed = parse_retry_after(value, now=NOW)
    if expected is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(expected)


RETRY = Classification(Action.RETRY, errors.UpstreamError("x"), True)
BACKOFF = Classification(Action.BACKOFF, errors.RateLimited("x"), False, 1.0)
REBUILD = Classification(Action.REBUILD_SESSION, errors.AuthenticationFailed("x"), False)
FAIL = Classification(Action.FAIL, errors.RequestError("x"), False)


def test_may_retry_counts_attempts() -> None:
    three = policy(max_retries=3)
    assert may_retry(RETRY, attempt=2, policy=three, idempotent=True, first_token_sent=False)
    assert not may_retry(RETRY, attempt=3, policy=three, idempotent=True, first_token_sent=False)
    assert may_retry(BACKOFF, attempt=0, policy=three, idempotent=True, first_token_sent=False)
    assert not may_retry(FAIL, attempt=0, policy=three, idempotent=True, first_token_sent=False)


def test_no_retry_after_first_token_or_when_not_idempotent() -> None:
    for verdict in (RETRY, BACKOFF, REBUILD):
        assert not may_retry(
            verdict, attempt=0, policy=policy(), idempotent=True, first_token_sent=True
        )
        assert not may_retry(
            verdict, attempt=0, policy=policy(), idempotent=False, first_token_sent=False
        )


def test_session_rebuild_once_even_with_retries_off() -> None:
    off = policy(max_retries=0)
    assert may_retry(REBUILD, attempt=0, policy=off, idempotent=True, first_token_sent=False)
    assert not may_retry(
        REBUILD,
        attempt=0,
        policy=off,
        idempotent=True,
        first_token_sent=False,
        session_rebuilt=True,
    )
