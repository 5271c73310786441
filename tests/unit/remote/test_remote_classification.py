"""The classification table, row by row: status (and body) -> action, error, breaker flag."""

from __future__ import annotations

import json

import aiohttp
import pytest

from inference_runtime import errors
from inference_runtime.remote import STATUS_TABLE, Action, classify_exception, classify_response
from inference_runtime.remote.http_client import HttpConnectionError
from inference_runtime.remote.upstream_errors import parse_error_body, redact

NOW = 1_700_000_000.0


def openai_error(message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def anthropic_error(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


# status, headers, body, action, exact error class, counts for breaker, retry_after
ROWS = [
    (400, {}, openai_error("bad temperature", param="temperature"), Action.FAIL,
     errors.RequestError, False, None),
    (401, {}, openai_error("Incorrect API key provided"), Action.REBUILD_SESSION,
     errors.AuthenticationFailed, False, None),
    (403, {}, b"", Action.FAIL, errors.PermissionDenied, False, None),
    (404, {}, openai_error("The model `gpt-9` does not exist"), Action.FAIL,
     errors.NotFound, False, None),
    (407, {}, b"", Action.FAIL, errors.UpstreamError, False, None),
    (408, {}, b"", Action.RETRY, errors.GatewayTimeout, True, None),
    (409, {}, b"", Action.FAIL, errors.RequestError, False, None),
    (413, {}, anthropic_error("request_too_large", "too big"), Action.FAIL,
     errors.RequestError, False, None),
    (422, {}, b'{"detail": "field required"}', Action.FAIL, errors.RequestError, False, None),
    (429, {"Retry-After": "7"}, openai_error("slow down"), Action.BACKOFF,
     errors.RateLimited, False, 7.0),
    (429, {}, anthropic_error("rate_limit_error", "slow down"), Action.BACKOFF,
     errors.RateLimited, False, None),
    (500, {}, b"oops", Action.RETRY, errors.UpstreamError, True, None),
    (502, {}, b"<html>bad gateway</html>", Action.RETRY, errors.UpstreamError, True, None),
    (503, {"retry-after": "3"}, b"", Action.RETRY, errors.UpstreamError, True, 3.0),
    (504, {}, b"", Action.RETRY, errors.UpstreamError, True, None),
    (529, {}, anthropic_error("overloaded_error", "Overloaded"), Action.RETRY,
     errors.UpstreamError, True, None),
    (507, {}, b"", Action.RETRY, errors.UpstreamError, True, None),
    (302, {}, b"", Action.FAIL, errors.UpstreamError, False, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "headers", "body", "action", "error", "counts", "retry_after"),
    ROWS,
    ids=[f"{row[0]}-{i}" for i, row in enumerate(ROWS)],
)
def test_status_row(
    status: int,
    headers: dict[str, str],
    body: bytes,
    action: Action,
    error: type[errors.InferenceRuntimeError],
    counts: bool,
    retry_after: float | None,
) -> None:
    result = classify_response(status, headers, body, provider="openai", now=NOW)
    assert result.action is action
    assert type(result.error) is error
    assert result.counts_for_breaker is counts
    assert result.retry_after == retry_after


def test_every_listed_status_has_a_row_test() -> None:
    tested = {row[0] for row in ROWS}
    assert set(STATUS_TABLE) <= tested


def test_bad_request_keeps_upstream_message_param_and_code() -> None:
    body = openai_error("temperature must be <= 2", code="invalid_value", param="temperature")
    error = classify_response(400, {}, body, provider="openai").error
    assert isinstance(error, errors.RequestError)
    assert str(error) == "temperature must be <= 2"
    assert (error.param, error.code) == ("temperature", "invalid_value")


def test_anthropic_bad_request_message() -> None:
    body = anthropic_error("invalid_request_error", "max_tokens: field required")
    error = classify_response(400, {}, body, provider="anthropic").error
    assert type(error) is errors.RequestError
    assert str(error) == "max_tokens: field required"


@pytest.mark.parametrize(
    "body",
    [
        openai_error("too long", code="context_length_exceeded", param="messages"),
        openai_error("This model's maximum context length is 2048 tokens. However, ..."),
        anthropic_error("invalid_request_error", "prompt is too long: 201000 tokens > 200000"),
        anthropic_error(
            "invalid_request_error", "input length and max_tokens exceed context limit"
        ),
        b'{"object": "error", "message": "exceeds the context window", "code": 400}',
    ],
)
def test_context_length_rows(body: bytes) -> None:
    result = classify_response(400, {}, body, provider="p")
    assert result.action is Action.FAIL
    assert type(result.error) is errors.RequestError
    assert result.error.code == "context_length_exceeded"
    assert result.error.param == "messages"
    assert not result.counts_for_breaker


@pytest.mark.parametrize("code", ["content_filter", "content_policy_violation"])
def test_content_filter_rows(code: str) -> None:
    body = openai_error("The response was filtered", code=code, param="prompt")
    result = classify_response(400, {}, body, provider="azure")
    assert result.action is Action.FAIL
    assert type(result.error) is errors.ContentFiltered
    assert result.error.code == "content_filter"


def test_413_has_its_code_and_generic_message_without_body() -> None:
    error = classify_response(413, {}, b"", provider="anthropic").error
    assert isinstance(error, errors.RequestError)
    assert error.code == "request_too_large"
    assert "anthropic" in str(error) and "413" in str(error)


def test_404_says_model_or_path_not_found() -> None:
    error = classify_response(404, {}, b"", provider="openai").error
    assert "no such model or path" in str(error)


def test_429_retry_after_reaches_the_error_and_ms_header_wins() -> None:
    result = classify_response(
        429, {"retry-after-ms": "1500", "retry-after": "2"}, b"", provider="openai", now=NOW
    )
    assert result.retry_after == 1.5
    assert isinstance(result.error, errors.RateLimited)
    assert result.error.retry_after == 1.5
    no_hint = classify_response(429, {}, b"", provider="openai")
    assert isinstance(no_hint.error, errors.RateLimited)
    assert no_hint.error.retry_after == 1.0


def test_429_insufficient_quota_fails_instead_of_waiting() -> None:
    body = json.dumps(
        {"error": {"message": "You exceeded your quota", "type": "insufficient_quota"}}
    ).encode()
    result = classify_response(429, {}, body, provider="openai")
    assert result.action is Action.FAIL
    assert type(result.error) is errors.RateLimited


def test_retry_after_http_date_on_503() -> None:
    headers = {"Retry-After": "Tue, 14 Nov 2023 22:13:30 GMT"}  # NOW + 10 s
    result = classify_response(503, headers, b"", provider="p", now=NOW)
    assert result.retry_after == pytest.approx(10.0)


def test_no_secret_in_any_message() -> None:
    body = openai_error("Incorrect API key provided: sk-proj-abcdEFGH1234****wxyz. See docs.")
    result = classify_response(401, {"Authorization": "Bearer sk-live-secret"}, body, provider="o")
    text = str(result.error)
    assert "sk-proj" not in text and "abcdEFGH" not in text and "sk-live" not in text
    assert "[redacted]" in text


@pytest.mark.parametrize(
    "text",
    [
        "key sk-ant-api03-AAAAAAAAAAAA rejected",
        "header authorization: Bearer abc.def.ghi",
        "GET https://x.example/v1?key=AIzaSyXXXX&alt=sse",
        "x-api-key: secret-value",
    ],
)
def test_redact(text: str) -> None:
    cleaned = redact(text)
    for secret in ("AAAAAAAAAAAA", "abc.def.ghi", "AIzaSyXXXX", "secret-value"):
        assert secret not in cleaned


def test_long_or_binary_bodies_are_cut_and_printable() -> None:
    detail = parse_error_body(b"<html>" + b"x" * 10_000 + b"\xff</html>")
    assert len(detail.message) <= 500
    assert parse_error_body(b"").message == ""
    assert parse_error_body(b'{"error": "plain string"}').message == "plain string"


# -- exceptions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "action", "error", "counts"),
    [
        (TimeoutError(), Action.RETRY, errors.GatewayTimeout, True),  # = asyncio.TimeoutError
        (TimeoutError("read"), Action.RETRY, errors.GatewayTimeout, True),
        (aiohttp.ServerTimeoutError("slow"), Action.RETRY, errors.GatewayTimeout, True),
        (aiohttp.ConnectionTimeoutError(), Action.RETRY, errors.GatewayTimeout, True),
        (aiohttp.ClientConnectionError("x"), Action.RETRY, errors.UpstreamError, True),
        (aiohttp.ServerDisconnectedError(), Action.RETRY, errors.UpstreamError, True),
        (aiohttp.ClientPayloadError("cut"), Action.RETRY, errors.UpstreamError, True),
        (ConnectionResetError(104, "reset"), Action.RETRY, errors.UpstreamError, True),
        (HttpConnectionError("closed"), Action.RETRY, errors.UpstreamError, True),
        (ValueError("bug"), Action.FAIL, errors.UpstreamError, False),
    ],
)
def test_exception_row(
    raised: BaseException,
    action: Action,
    error: type[errors.InferenceRuntimeError],
    counts: bool,
) -> None:
    result = classify_exception(raised, provider="openai")
    assert result.action is action
    assert type(result.error) is error
    assert result.counts_for_breaker is counts
    assert result.retry_after is None


def test_our_own_errors_pass_through_as_fail() -> None:
    own = errors.UpstreamError("malformed SSE: event larger than 10 bytes")
    result = classify_exception(own, provider="openai")
    assert result.action is Action.FAIL and result.error is own
    assert not result.counts_for_breaker


def test_client_response_error_uses_the_status_table() -> None:
    raised = aiohttp.ClientResponseError(
        None,  # type: ignore[arg-type]
        (),
        status=503,
        headers={"Retry-After": "2"},  # type: ignore[arg-type]
    )
    result = classify_exception(raised, provider="openai")
    assert result.action is Action.RETRY and result.retry_after == 2.0


def test_exception_messages_are_redacted() -> None:
    raised = aiohttp.ClientConnectionError("failed for https://h/v1?api_key=topsecret")
    assert "topsecret" not in str(classify_exception(raised, provider="openai").error)
