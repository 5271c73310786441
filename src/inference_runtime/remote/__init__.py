"""Remote providers: resilience building blocks of the remote engine cores.

Plain, synchronous-where-possible modules with injected clocks: the classification table and
backoff (``retry``), the circuit breaker (``circuit``), the rate limiter (``ratelimit``), the SSE
parser (``sse``) and their config (``settings``).
"""

from inference_runtime.remote.circuit import CircuitBreaker, CircuitBreakers, CircuitStats
from inference_runtime.remote.ratelimit import (
    Permit,
    RateLimiter,
    RateLimiters,
    RateLimiterStats,
    api_key_fingerprint,
)
from inference_runtime.remote.retry import (
    STATUS_TABLE,
    Action,
    Classification,
    backoff_delay,
    classify_exception,
    classify_response,
    may_retry,
    parse_retry_after,
)
from inference_runtime.remote.settings import (
    CircuitBreakerConfig,
    RateLimits,
    RetryPolicy,
    Timeouts,
)
from inference_runtime.remote.sse import SSEEvent, SSEParser
from inference_runtime.remote.upstream_errors import redact

__all__ = [
    "STATUS_TABLE",
    "Action",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakers",
    "CircuitStats",
    "Classification",
    "Permit",
    "RateLimiter",
    "RateLimiterStats",
    "RateLimiters",
    "RateLimits",
    "RetryPolicy",
    "SSEEvent",
    "SSEParser",
    "Timeouts",
    "api_key_fingerprint",
    "backoff_delay",
    "classify_exception",
    "classify_response",
    "may_retry",
    "parse_retry_after",
    "redact",
]
