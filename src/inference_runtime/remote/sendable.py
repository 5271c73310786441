"""What may go into an HTTP/1.1 header: checked when a session loads, not when a request fails.

A header is latin-1 on the wire and ends at a line break: a key file with a second line, a
key with a curly quote pasted in, or a configured header value with CR/LF would otherwise fail
(or, worse, split the request) in the middle of a call. Errors name the field, never the value.
"""

from __future__ import annotations

import re

# RFC 9110 token characters, for names; values: visible latin-1, space and tab
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


FRAMING_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
"""Headers the HTTP client writes itself: one given in ``runtime_config.headers`` would be sent
twice (two Content-Lengths, or Content-Length beside Transfer-Encoding: a request that a
lenient server or a shared proxy may split in two)."""


def check_configurable_header(field: str, name: str, value: str) -> None:
    """Raise ``ValueError`` naming ``field`` for a configured header that cannot be sent or
    that frames the request (``FRAMING_HEADERS``)."""
    check_sendable(f"{field}:", name, name=True)
    if name.lower() in FRAMING_HEADERS:
        raise ValueError(
            f"{field}.{name}: the HTTP client sets this header itself; it cannot be configured"
        )
    check_sendable(f"{field}.{name}", value)


def check_sendable(field: str, value: str, *, name: bool = False) -> None:
    """Raise ``ValueError`` naming ``field`` when ``value`` cannot be sent as a header
    (``name``: as a header's name)."""
    if name:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{field} {value!r} is not a valid HTTP header name")
        return
    bad = _BAD_VALUE.search(value)
    if bad is None:
        return
    char = bad.group()
    if char in "\r\n":
        why = "contains a line break (a second line?)"
    elif ord(char) > 0xFF:
        why = "contains a character that is not latin-1 (HTTP headers cannot carry it)"
    else:
        why = "contains a control character"
    raise ValueError(f"{field} {why}; it cannot be sent in an HTTP header")
