"""Faults a :class:`~inference_runtime.testing.MockUpstream` can play, and provider error bodies.

A fault is plain frozen data so that a test can build its script up front, compare faults, and
read back which fault a recorded request got (``RecordedRequest.fault``). Error bodies follow each
provider's published shape exactly, because the remote engine core classifies failures by status
*and* body (``code``, ``type``), and a mock that answers in a made-up shape would let a wrong
classifier pass its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import msgspec

FaultKind = Literal[
    "status",
    "slow_first_byte",
    "stall_after",
    "reset",
    "reset_after",
    "malformed_sse",
    "wrong_key",
    "error_after",
    "truncate_after",
    "echo_key",
]

_encode = msgspec.json.Encoder().encode
_N = TypeVar("_N", int, float)


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour of the mock upstream, applied to one request.

    Build faults with the constructors (``Fault.status(429, retry_after=1.0)``, ``Fault.reset()``,
    ...), not the raw fields. A *chunk* is one SSE event: for OpenAI one ``data:`` line (the
    first carries the assistant role, so ``stall_after(1, ...)`` stalls before the first word),
    for Anthropic one ``event:``/``data:`` pair (``message_start`` is the first). A fault that
    counts chunks and is given more than the stream has triggers after the last event
    (``[DONE]`` / ``message_stop``), before the end of the HTTP body.
    """

    kind: FaultKind
    http_status: int = 0
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None
    error_type: str | None = None
    seconds: float = 0.0
    n_chunks: int = 0
    param: str | None = None
    mid_stream: bool = False

    @classmethod
    def status(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
        error_type: str | None = None,
    ) -> Fault:
        """Answer ``status`` with the provider's error body instead of a reply.

        ``retry_after`` (seconds) adds ``Retry-After`` and ``retry-after-ms`` headers, as OpenAI
        and Anthropic send with 429 and 503/529. ``code`` sets OpenAI's ``error.code``
        (``Fault.status(400, code="context_length_exceeded")`` gives the real context-length
        error, with the matching message, on both providers); ``error_type`` overrides the
        ``type`` chosen from the status (Anthropic: 529 is ``overloaded_error``).
        """
        if not 400 <= status <= 599:
            raise ValueError(f"a status fault needs an error status (400..599), not {status}")
        return cls(
            "status",
            http_status=status,
            retry_after=retry_after,
            code=code,
            message=message,
            error_type=error_type,
        )

    @classmethod
    def slow_first_byte(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before the response headers (instead of ``first_byte_delay_s``):
        exercises connect/first-byte timeouts and time-to-first-token accounting."""
        return cls("slow_first_byte", seconds=_non_negative(seconds))

    @classmethod
    def stall_after(cls, n_chunks: int, seconds: float) -> Fault:
        """Stream ``n_chunks`` chunks, then send nothing for ``seconds`` with the connection
        open, then finish normally: exercises read (inter-chunk) timeouts. A non-streamed
        request gets its headers, then the stall, then its body."""
        return cls("stall_after", n_chunks=_non_negative(n_chunks), seconds=_non_negative(seconds))

    @classmethod
    def reset(cls) -> Fault:
        """Close the TCP connection with a reset (RST, ``SO_LINGER`` 0) and send no response:
        the client sees a connection error before any byte, the case a retry may replay."""
        return cls("reset")

    @classmethod
    def reset_after(cls, n_chunks: int) -> Fault:
        """Stream ``n_chunks`` chunks, then reset the connection: a failure after the first token,
        which must end the client's stream with an error, never silently. A non-streamed
        request gets its headers and half its body first."""
        return cls("reset_after", n_chunks=_non_negative(n_chunks))

    @classmethod
    def malformed_sse(cls, n_chunks: int = 0) -> Fault:
        """After ``n_chunks`` good chunks, send a ``data:`` line whose JSON is cut off (then the
        rest of the stream): the client's SSE/JSON parsing must fail loudly. A non-streamed
        request gets a 200 whose body is not valid JSON."""
        return cls("malformed_sse", n_chunks=_non_negative(n_chunks))

    @classmethod
    def wrong_key(cls) -> Fault:
        """Answer 401 as if the key were wrong, whatever key was sent: tests that a client
        rebuilds its session (re-reads its credentials) once and does not retry further."""
        return cls("wrong_key", http_status=401)

    @classmethod
    def error_after(cls, n_chunks: int, status: int = 500, *, message: str | None = None) -> Fault:
        """Stream ``n_chunks`` chunks, then an in-stream error event and the end of the body, as
        providers do when they fail mid-stream (OpenAI: ``data: {"error": ...}``; Anthropic:
        ``event: error`` with e.g. ``overloaded_error`` for 529). A non-streamed request gets
        the plain error response."""
        return cls(
            "error_after", http_status=status, n_chunks=_non_negative(n_chunks), message=message
        )

    @classmethod
    def truncate_after(cls, n_chunks: int) -> Fault:
        """Stream ``n_chunks`` chunks, then end the HTTP body cleanly without ``[DONE]`` /
        ``message_stop``: a stream that stops early with no error at the transport level. A
        non-streamed request gets its headers and half its body, then a clean close."""
        return cls("truncate_after", n_chunks=_non_negative(n_chunks))

    @classmethod
    def echo_key(cls, status: int = 401, *, after: int | None = None) -> Fault:
        """Answer ``status`` with an error whose message, ``param`` and ``code`` all carry the
        key the request was sent with, whatever its shape (the way careless upstreams leak a
        credential); with ``after``, a streamed request gets ``after`` chunks and then the same
        error as an in-stream error event (a non-streamed one the plain error response)."""
        if not 400 <= status <= 599:
            raise ValueError(f"an echo_key fault needs an error status (400..599), not {status}")
        return cls(
            "echo_key",
            http_status=status,
            n_chunks=_non_negative(after or 0),
            mid_stream=after is not None,
        )

    def echoing(self, key: str) -> Fault:
        """This ``echo_key`` fault made concrete for a request sent with ``key``: a status
        fault, or an ``error_after`` one mid-stream."""
        return Fault(
            "error_after" if self.mid_stream else "status",
            http_status=self.http_status,
            n_chunks=self.n_chunks,
            message=f"Incorrect API key provided: {key}. You can find your key elsewhere.",
            code=f"bad_key:{key}",
            param=key,
        )


def _non_negative(value: _N) -> _N:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to use this resource.",
    404: "The model does not exist or you do not have access to it.",
    413: "Request body too large.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "The server timed out while processing your request.",
    529: "Overloaded",
}
CONTEXT_LENGTH = "context_length_exceeded"


def openai_error(
    status: int,
    *,
    message: str | None = None,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
) -> bytes:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    if code == CONTEXT_LENGTH:
        param = param or "messages"
        message = message or (
            "This model's maximum context length is 4096 tokens. However, your messages "
            "resulted in 5000 tokens. Please reduce the length of the messages."
        )
    if error_type is None:
        error_type = _OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    return _encode(
        {
            "error": {
                "message": message or _MESSAGES.get(status, f"Error {status}."),
                "type": error_type,
                "param": param,
                "code": code if code is not None else _OPENAI_CODES.get(status),
            }
        }
    )


def anthropic_error_object(
    status: int,
    *,
    message: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
) -> dict[str, object]:
    """Anthropic's error object: ``{"type": "error", "error": {"type", "message"}}``."""
    if code == CONTEXT_LENGTH:
        message = message or "prompt is too long: 200001 tokens > 200000 maximum"
    if error_type is None:
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        error_type = _ANTHROPIC_TYPES.get(status, fallback)
    if status == 401 and message is None:
        message = "invalid x-api-key"
    return {
        "type": "error",
        "error": {
            "type": error_type,
            "message": message or _MESSAGES.get(status, f"Error {status}."),
        },
    }


def anthropic_error(
    status: int,
    *,
    message: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
) -> bytes:
    return _encode(
        anthropic_error_object(status, message=message, code=code, error_type=error_type)
    )


def retry_after_headers(retry_after: float | None) -> dict[str, str]:
    """``Retry-After`` in seconds (whole when it can be, as HTTP prefers) and ``retry-after-ms``."""
    if retry_after is None:
        return {}
    seconds = str(int(retry_after)) if float(retry_after).is_integer() else f"{retry_after:g}"
    return {"Retry-After": seconds, "retry-after-ms": str(round(retry_after * 1000))}
