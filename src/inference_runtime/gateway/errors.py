"""The one place where errors become HTTP statuses and OpenAI's error body.

``{"error": {"message", "type", "param", "code"}}``; 429 and 503 carry ``Retry-After``. Anything
outside the error tree is a bug: 500, logged with its traceback, its text not shown to clients.
"""

from __future__ import annotations

import logging
import math

import msgspec

from inference_runtime import errors as e

log = logging.getLogger("inference_runtime.gateway")

# (class, status, type, default code); the first match in order wins, so subclasses come first
_TABLE: tuple[tuple[type[BaseException], int, str, str | None], ...] = (
    (e.ContextLengthExceeded, 400, "invalid_request_error", "context_length_exceeded"),
    (e.ContentFiltered, 400, "invalid_request_error", "content_filter"),
    (e.RequestError, 400, "invalid_request_error", None),
    (e.AuthenticationFailed, 401, "authentication_error", "invalid_api_key"),
    (e.PermissionDenied, 403, "permission_error", "permission_denied"),
    (e.ModelNotFound, 404, "invalid_request_error", "model_not_found"),
    (e.NotFound, 404, "not_found_error", "not_found"),
    (e.Conflict, 409, "invalid_request_error", "conflict"),
    (e.RequestTooLarge, 413, "invalid_request_error", "request_too_large"),
    (e.UnsupportedMediaType, 415, "invalid_request_error", "unsupported_media_type"),
    (e.RequestFailedReplicas, 500, "server_error", "request_failed_replica"),
    (e.BudgetExceeded, 429, "rate_limit_error", "budget_exceeded"),
    (e.RateLimited, 429, "rate_limit_error", "rate_limit_exceeded"),
    (e.Backpressure, 429, "rate_limit_error", "capacity_exhausted"),
    (e.CircuitOpen, 503, "service_unavailable_error", "circuit_open"),
    (e.PlacementFailed, 503, "service_unavailable_error", "placement_failed"),
    (e.ReplicaFailed, 503, "service_unavailable_error", "replica_failed"),
    (e.Unavailable, 503, "service_unavailable_error", "no_healthy_replica"),
    (e.ActorStopped, 503, "service_unavailable_error", "shutting_down"),
    (e.OutOfMemory, 503, "service_unavailable_error", "out_of_memory"),
    (e.EngineError, 503, "service_unavailable_error", "engine_error"),
    (e.UpstreamError, 502, "upstream_error", "upstream_error"),
    (e.GatewayTimeout, 504, "timeout_error", "timeout"),
)


class HttpError(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def payload(self) -> dict[str, object]:
        result: dict[str, object] = msgspec.json.decode(self.body)
        return result


def error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return msgspec.json.encode(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def _classify(error: BaseException) -> tuple[int, str, str | None] | None:
    for cls, status, type_, default_code in _TABLE:
        if isinstance(error, cls):
            return status, type_, default_code
    return None


def to_http(error: BaseException) -> HttpError:
    row = _classify(error)
    if row is None:
        log.error("unexpected error reached the gateway", exc_info=error)
        return HttpError(
            500,
            error_body(
                "The server had an error while processing your request.",
                "server_error",
                None,
                "internal_error",
            ),
            {},
        )
    status, type_, default_code = row
    param = getattr(error, "param", None)
    code = getattr(error, "code", None) or default_code
    headers: dict[str, str] = {}
    if status in (429, 503):
        retry_after = getattr(error, "retry_after", None) or 1.0
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return HttpError(status, error_body(str(error), type_, param, code), headers)
