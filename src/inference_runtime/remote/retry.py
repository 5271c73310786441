"""What to do after an upstream call failed: the classification table and the backoff.

One table (:data:`STATUS_TABLE`, plus a row each for other 4xx, other 5xx and anything else)
decides, for every HTTP status a provider may answer, whether to retry, back off, rebuild the
session or fail, which error of ``errors.py`` the client gets, and whether the failure says the
upstream is unhealthy (counts toward the circuit breaker). Only 400 looks at the body, to tell a
context-length or content-filter refusal from another bad request, and 429 at the error type, to
tell an exhausted quota (waiting does not help) from a rate limit.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from inference_runtime.errors import (
    AuthenticationFailed,
    ContentFiltered,
    GatewayTimeout,
    InferenceRuntimeError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestError,
    UpstreamError,
)
from inference_runtime.remote.settings import RetryPolicy
from inference_runtime.remote.upstream_errors import header, parse_error_body, redact

CONTEXT_LENGTH_MARKERS = (
    "context length",
    "context_length",
    "context window",
    "context limit",
    "prompt is too long",
)
"""Lower-case phrases of providers' context-overflow messages (OpenAI, vLLM, Anthropic)."""
CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


class Action(enum.Enum):
    RETRY = "retry"
    """Transient upstream trouble: retry after ``backoff_delay``."""
    BACKOFF = "backoff"
    """Rate limited: wait (honouring Retry-After), then retry."""
    REBUILD_SESSION = "rebuild_session"
    """Credentials refused: rebuild the session (re-read the key) and retry once."""
    FAIL = "fail"
    """Trying again cannot help: the error goes to the client."""


@dataclass(frozen=True, slots=True)
class Classification:
    action: Action
    error: InferenceRuntimeError
    """What the client gets if no retry follows (or none succeeds)."""
    counts_for_breaker: bool
    """The failure says the upstream is unhealthy (5xx, timeout, broken connection)."""
    retry_after: float | None = None
    """Seconds the upstream asked us to wait (Retry-After / retry-after-ms), if it said."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the table: the action, the error class, the breaker flag, words for messages."""

    action: Action
    error: type[InferenceRuntimeError]
    counts_for_breaker: bool
    says: str


STATUS_TABLE: Mapping[int, Row] = {
    400: Row(Action.FAIL, RequestError, False, "rejected the request"),
    401: Row(Action.REBUILD_SESSION, AuthenticationFailed, False, "rejected the credentials"),
    403: Row(Action.FAIL, PermissionDenied, False, "denied access"),
    404: Row(Action.FAIL, NotFound, False, "has no such model or path"),
    # the proxy's answer, not the upstream's: this deployment's proxy settings are wrong
    407: Row(Action.FAIL, UpstreamError, False, "was not reached: the proxy wants credentials"),
    408: Row(Action.RETRY, GatewayTimeout, True, "timed out waiting for the request"),
    413: Row(Action.FAIL, RequestError, False, "found the request too large"),
    429: Row(Action.BACKOFF, RateLimited, False, "is rate limiting"),
    500: Row(Action.RETRY, UpstreamError, True, "failed"),
    502: Row(Action.RETRY, UpstreamError, True, "had a bad gateway"),
    503: Row(Action.RETRY, UpstreamError, True, "is unavailable"),
    504: Row(Action.RETRY, UpstreamError, True, "had a gateway timeout"),
    529: Row(Action.RETRY, UpstreamError, True, "is overloaded"),
}
OTHER_4XX = Row(Action.FAIL, RequestError, False, "rejected the request")
OTHER_5XX = Row(Action.RETRY, UpstreamError, True, "failed")
UNEXPECTED = Row(Action.FAIL, UpstreamError, False, "answered with an unexpected status")


def row_for(status: int) -> Row:
    """The table row of an HTTP status."""
    row = STATUS_TABLE.get(status)
    if row is not None:
        return row
    if 400 <= status < 500:
        return OTHER_4XX
    if 500 <= status < 600:
        return OTHER_5XX
    return UNEXPECTED


def classify_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    provider: str,
    now: float | None = None,
) -> Classification:
    """Classify an upstream error response. ``now`` (wall-clock epoch seconds, default
    ``time.time()``) resolves a Retry-After given as an HTTP date. A bad request keeps the
    upstream's own (redacted) words, so a client reads what the provider said."""
    row = row_for(status)
    detail = parse_error_body(body)
    retry_after = _retry_after(headers, time.time() if now is None else now)
    generic = f"upstream {provider} {row.says} (HTTP {status})"
    message = f"{generic}: {detail.message}" if detail.message else generic
    error: InferenceRuntimeError
    action = row.action
    if row.error is RequestError:
        lowered = detail.message.lower()
        if detail.code == "context_length_exceeded" or any(
            marker in lowered for marker in CONTEXT_LENGTH_MARKERS
        ):
            error = RequestError(
                detail.message or generic, param="messages", code="context_length_exceeded"
            )
        elif CONTENT_FILTER_CODES.intersection((detail.code, detail.kind)):
            error = ContentFiltered(
                detail.message or generic, param=detail.param, code="content_filter"
            )
        else:
            code = "request_too_large" if status == 413 else detail.code
            error = RequestError(detail.message or generic, param=detail.param, code=code)
    elif row.error is RateLimited:
        if "insufficient_quota" in (detail.code, detail.kind):
            action = Action.FAIL  # the account is out of credit: waiting does not help
        error = RateLimited(message, retry_after=1.0 if retry_after is None else retry_after)
    else:
        error = row.error(message)
    return Classification(action, error, row.counts_for_breaker, retry_after)


def classify_exception(error: BaseException, *, provider: str) -> Classification:
    """Classify what an upstream call raised instead of answering.

    Our own errors (a malformed-SSE ``UpstreamError``, ``CircuitOpen``) pass through as FAIL:
    they are already decisions. ``CancelledError`` should never get here (let it propagate).
    """
    if isinstance(error, InferenceRuntimeError):
        return Classification(Action.FAIL, error, False)
    if isinstance(error, aiohttp.ClientResponseError):  # raise_for_status(): use the table
        return classify_response(error.status, error.headers or {}, b"", provider=provider)
    described = _describe(error)
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return Classification(
            Action.RETRY, GatewayTimeout(f"upstream {provider} timed out ({described})"), True
        )
    if isinstance(
        error, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | ConnectionError
    ):
        return Classification(
            Action.RETRY,
            UpstreamError(f"upstream {provider} connection failed ({described})"),
            True,
        )
    return Classification(
        Action.FAIL, UpstreamError(f"upstream {provider} call failed ({described})"), False
    )


def may_retry(
    classification: Classification,
    *,
    attempt: int,
    policy: RetryPolicy,
    idempotent: bool,
    first_token_sent: bool,
    session_rebuilt: bool = False,
) -> bool:
    """Whether to try again. ``attempt`` counts the retries made so far. Never after the first
    token reached the client (it would see text twice) nor when the deployment is not
    idempotent; the session is still rebuilt after a 401, for the next request."""
    if first_token_sent or not idempotent:
        return False
    if classification.action is Action.REBUILD_SESSION:
        return not session_rebuilt
    if classification.action is Action.FAIL:
        return False
    return attempt < policy.max_retries


def backoff_delay(
    policy: RetryPolicy, attempt: int, *, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to sleep before retry number ``attempt`` (0 for the first retry).

    ``initial * multiplier**attempt``, capped at ``max_backoff_s``, then jittered. With
    ``respect_retry_after`` a larger Retry-After wins, but it is capped at ``max_backoff_s``
    too: a worker never sleeps longer than the operator allowed, whatever the upstream says (a
    caller that prefers to give up on a long Retry-After compares ``retry_after`` itself).
    """
    if attempt < 0:
        raise ValueError("attempt: must be >= 0")
    cap = policy.max_backoff_s
    try:
        base = min(cap, policy.initial_backoff_s * policy.multiplier**attempt)
    except OverflowError:
        base = cap
    if policy.jitter == "full":
        delay = rng.uniform(0.0, base)
    elif policy.jitter == "equal":
        delay = base / 2 + rng.uniform(0.0, base / 2)
    else:
        delay = base
    if policy.respect_retry_after and retry_after is not None and retry_after > delay:
        delay = min(retry_after, cap)
    return delay


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds from a Retry-After value: delay-seconds (decimals tolerated) or an HTTP date,
    relative to ``now`` (wall-clock epoch seconds). A date in the past gives 0; garbage None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a missing zone means GMT too
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _describe(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not hide the classification
        text = ""
    return redact(f"{type(error).__name__}: {text}")[:300] if text else type(error).__name__


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    millis = header(headers, "retry-after-ms")  # OpenAI's precise variant wins when present
    if millis is not None:
        parsed = parse_retry_after(millis, now=now)
        if parsed is not None:
            return parsed / 1000.0
    return parse_retry_after(header(headers, "retry-after"), now=now)
