"""The resilience config: defaults as documented, YAML-shaped decoding, rules named by field."""

from __future__ import annotations

import re

import msgspec
import pytest

from inference_runtime.remote import CircuitBreakerConfig, RateLimits, RetryPolicy, Timeouts


def test_defaults_match_the_documented_config() -> None:
    assert msgspec.to_builtins(RetryPolicy()) == {
        "max_retries": 3,
        "initial_backoff_s": 0.5,
        "max_backoff_s": 30.0,
        "multiplier": 2.0,
        "jitter": "full",
        "respect_retry_after": True,
    }
    assert msgspec.to_builtins(CircuitBreakerConfig()) == {
        "failure_threshold": 5,
        "open_duration_s": 30.0,
        "initial_open_duration_s": 1.0,
        "half_open_probes": 1,
    }
    assert msgspec.to_builtins(RateLimits()) == {
        "requests_per_minute": 500,
        "tokens_per_minute": 200_000,
    }
    assert msgspec.to_builtins(Timeouts()) == {
        "connect_s": 5.0,
        "first_byte_s": 60.0,
        "read_s": 30.0,
    }


def test_decodes_from_config_shape_with_ints_for_floats() -> None:
    retry = msgspec.convert({"max_backoff_s": 10, "jitter": "equal"}, RetryPolicy)
    assert retry.max_backoff_s == 10.0 and retry.jitter == "equal"
    limits = msgspec.convert({"requests_per_minute": None}, RateLimits)
    assert limits.requests_per_minute is None


@pytest.mark.parametrize("kind", [RetryPolicy, CircuitBreakerConfig, RateLimits, Timeouts])
def test_unknown_fields_are_refused(kind: type[msgspec.Struct]) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"typo": 1}, kind)


def test_structs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        RetryPolicy().max_retries = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "values", "message"),
    [
        (RetryPolicy, {"max_retries": -1}, "retry.max_retries: must be >= 0"),
        (RetryPolicy, {"max_retries": 1.5}, "retry.max_retries: must be an integer"),
        (RetryPolicy, {"initial_backoff_s": 0}, "retry.initial_backoff_s: must be"),
        (RetryPolicy, {"max_backoff_s": float("inf")}, "retry.max_backoff_s: must be"),
        (RetryPolicy, {"initial_backoff_s": 5, "max_backoff_s": 1}, "retry.max_backoff_s"),
        (RetryPolicy, {"multiplier": 0.5}, "retry.multiplier: must be a finite number >= 1"),
        (RetryPolicy, {"jitter": "some"}, "retry.jitter: must be one of full, equal, none"),
        (CircuitBreakerConfig, {"failure_threshold": 0}, "circuit_breaker.failure_threshold"),
        (CircuitBreakerConfig, {"open_duration_s": -1}, "circuit_breaker.open_duration_s"),
        (CircuitBreakerConfig, {"half_open_probes": 0}, "circuit_breaker.half_open_probes"),
        (RateLimits, {"requests_per_minute": 0}, "rate_limits.requests_per_minute: must be >= 1"),
        (RateLimits, {"tokens_per_minute": -5}, "rate_limits.tokens_per_minute"),
        (Timeouts, {"connect_s": 0}, "timeouts.connect_s: must be a finite number > 0"),
        (Timeouts, {"first_byte_s": float("nan")}, "timeouts.first_byte_s"),
        (Timeouts, {"read_s": -1}, "timeouts.read_s"),
    ],
)
def test_rules_name_the_field(
    kind: type[msgspec.Struct], values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        kind(**values)


def test_rules_apply_when_decoding_too() -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape("retry.max_retries")):
        msgspec.convert({"max_retries": -2}, RetryPolicy)


def test_a_path_goes_before_the_base_urls_query() -> None:
    from inference_runtime.remote.config import endpoint_url

    assert endpoint_url("https://h.example/v1/", "/chat/completions") == (
        "https://h.example/v1/chat/completions"
    )
    assert endpoint_url("https://h.example/openai/v1?api-version=2024-10-21", "/embeddings") == (
        "https://h.example/openai/v1/embeddings?api-version=2024-10-21"
    )
