"""Reading a provider's error body, and keeping secrets out of what we repeat from it.

Error bodies come in a few shapes: OpenAI's ``{"error": {"message", "type", "param", "code"}}``,
Anthropic's ``{"type": "error", "error": {"type", "message"}}``, vLLM's older flat
``{"object": "error", "message", ...}`` and FastAPI's ``{"detail": ...}``. Anything else (HTML
from a load balancer, an empty body) still yields a short, printable message.

Providers sometimes echo part of the credential ("Incorrect API key provided: sk-...") and
URLs may carry ``?key=``; :func:`redact` removes those before a message reaches an error, a log
or a client (DESIGN.md section 4: secrets never appear in errors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

MAX_MESSAGE_CHARS = 500
"""Upstream text repeated in an error is cut here: an HTML error page is not a message."""

_SECRETS = re.compile(
    r"(?i)\b(?:sk|pk|rk)-[A-Za-z0-9_\-*.]{6,}"  # OpenAI / Anthropic style keys, masked or not
    r"|\b(?:bearer|basic)\s+[A-Za-z0-9_\-.~+/=*]+"  # an Authorization value
    r"|(?<=[?&])(?:api[_-]?key|key|token|access_token|sig|signature)=[^&\s\"']+"
    r"|\b(?:x-api-key|api-key|authorization)\s*[:=]\s*(?:(?:bearer|basic)\s+)?\S+"
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[redacted]``."""
    return _SECRETS.sub("[redacted]", text)


def event_message(error: object) -> str:
    """The message of an error event in an upstream's stream (OpenAI's ``error`` field,
    Anthropic's ``error`` event), redacted and cut like an error body's."""
    if isinstance(error, Mapping):
        text = str(error.get("message") or error.get("type") or "unknown error")
    else:
        text = str(error)
    text = redact(" ".join(text.split()))
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text


@dataclass(frozen=True, slots=True)
class UpstreamDetail:
    """What an error body says, as far as it says it."""

    message: str
    """Redacted and cut to ``MAX_MESSAGE_CHARS``; empty when the body said nothing useful."""
    code: str | None = None
    """OpenAI's ``error.code`` (``context_length_exceeded``, ``content_filter``, ...)."""
    kind: str | None = None
    """``error.type``: OpenAI's (``insufficient_quota``) or Anthropic's (``overloaded_error``)."""
    param: str | None = None
    """OpenAI's ``error.param``: the request field at fault."""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_error_body(body: bytes) -> UpstreamDetail:
    """The message, code and param of an upstream error body, whatever its shape."""
    try:
        document: Any = msgspec.json.decode(body) if body else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        document = None
    message: str | None = None
    code: str | None = None
    param: str | None = None
    kind: str | None = None
    if isinstance(document, Mapping):
        error = document.get("error")
        if isinstance(error, Mapping):
            message = _text(error.get("message"))
            code = _text(error.get("code"))
            kind = _text(error.get("type"))
            param = _text(error.get("param"))
        elif isinstance(error, str):
            message = error
        message = message or _text(document.get("message")) or _text(document.get("detail"))
        code = code or _text(document.get("code"))
        kind = kind or (_text(document.get("type")) if error is None else None)
    elif body:
        message = " ".join(body[:65536].decode("utf-8", "replace").split())
    text = redact(message or "")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return UpstreamDetail(message=text, code=code, kind=kind, param=param)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name, from aiohttp's multidict or a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None
