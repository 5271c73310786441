"""Incremental ``text/event-stream`` parser, on bytes (HTML Living Standard, "event stream
interpretation").

Providers stream tokens as server-sent events, and the network splits them anywhere: inside a
line, inside a ``\\r\\n``, inside the byte order mark. :class:`SSEParser` keeps the unfinished
line between :meth:`~SSEParser.feed` calls and yields each event when its blank line arrives.

It is on the per-chunk path, so it stays on bytes and C-level operations: ``bytes.splitlines``
(which breaks at exactly the three line endings SSE allows: CRLF, LF and CR), ``find`` and
slicing; no regex, no decoding of ``data`` (the caller decodes the JSON it needs, or forwards the
bytes untouched). Field handling follows the standard: ``data`` lines are joined with ``\\n``,
``event`` sets the type, ``id`` sets :attr:`SSEParser.last_event_id` (unless it contains NUL),
``retry`` with only digits sets :attr:`SSEParser.retry_ms`, ``:`` lines are comments, unknown
fields are ignored, one leading space of a value is dropped, a leading BOM is skipped.

One deliberate deviation: the standard discards an event still pending when the stream ends;
:meth:`SSEParser.flush` dispatches it, because an upstream that omits the final blank line would
otherwise lose its last chunk (often the one carrying usage). A stream that was cut short shows as
a connection error of the HTTP client, not here.
"""

from __future__ import annotations

import msgspec

from inference_runtime.errors import UpstreamError

BOM = b"\xef\xbb\xbf"
_NEXT = b"\n\ndata: "
"""Between two one-line ``data`` events."""
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
"""Bound on one event (its data plus an unfinished line): a stream that never sends a newline
must not grow memory without end."""


class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    event: str | None
    """The ``event:`` field; None when absent or empty (the standard's default "message")."""
    data: bytes
    """The ``data:`` lines joined with ``\\n``."""


class SSEParser:
    __slots__ = (
        "_bom_checked",
        "_data",
        "_event",
        "_pending",
        "_size",
        "_skip_lf",
        "last_event_id",
        "max_event_bytes",
        "retry_ms",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes: must be >= 1")
        self.max_event_bytes = max_event_bytes
        self.last_event_id: str | None = None
        """The last ``id:`` seen (it persists across events, as the standard says)."""
        self.retry_ms: int | None = None
        """The last valid ``retry:`` (reconnection time in milliseconds)."""
        self._pending = bytearray()
        """The unfinished last line (or the first bytes of a possible BOM)."""
        self._skip_lf = False
        self._bom_checked = False
        self._data: list[bytes] = []
        self._event: str | None = None
        self._size = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        """The events completed by ``data`` (any split of the stream gives the same events).

        Raises ``UpstreamError`` when an event outgrows ``max_event_bytes``; the stream is then
        unusable.
        """
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:  # the LF of a CRLF split across two chunks
                data = data[1:]
        pending = self._pending
        if not self._bom_checked:
            data = b"".join((pending, data))
            pending.clear()
            if len(data) < len(BOM) and BOM.startswith(data):
                pending += data  # could still be a BOM: wait for more bytes
                return []
            self._bom_checked = True
            if data.startswith(BOM):
                data = data[len(BOM) :]
        elif pending:
            if b"\n" not in data and b"\r" not in data:
                # Still inside one long line: append in place (amortised O(1)), so an event
                # arriving in many small chunks costs linear, not quadratic, time.
                pending += data
                if len(pending) + self._size > self.max_event_bytes:
                    self._too_large()
                return []
            data = b"".join((pending, data))
            pending.clear()
        if not data:
            return []
        events: list[SSEEvent] = []
        if not self._data and self._event is None and b"\r" not in data:
            # The fast path, for LF-only streams between events (what providers send): whole
            # events up to the last blank line are cut at "\n\n"; a lone "data: " line is an
            # event as it stands, anything else goes through the line machinery below.
            cut = data.rfind(b"\n\n")
            if 0 <= cut <= self.max_event_bytes:
                line = self._line
                for block in data[:cut].split(b"\n\n"):
                    if block[:6] == b"data: " and b"\n" not in block:
                        events.append(SSEEvent(None, block[6:]))
                    else:
                        for part in block.split(b"\n"):
                            line(part, events)
                        line(b"", events)
                data = data[cut + 2 :]
                if not data:
                    return events
        lines = data.splitlines()
        last = data[-1]
        if last == 0x0D:
            self._skip_lf = True
        elif last != 0x0A:
            pending += lines.pop()
        for line_ in lines:
            self._line(line_, events)
        if len(self._pending) + self._size > self.max_event_bytes:
            self._too_large()
        return events

    def feed_data(self, data: bytes) -> list[bytes]:
        """The ``data`` of the events completed by ``data``, for a consumer that reads no
        event types (OpenAI's streams): the same events as :meth:`feed`, sharing its state.

        The common case (a read of whole events, each one ``data: `` line, LF endings) is cut
        apart with two C-level scans and one split, with no object per event."""
        if not self._bom_checked and not self._pending and len(data) >= len(BOM):
            self._bom_checked = True
            if data.startswith(BOM):
                data = data[len(BOM) :]
        if (
            self._bom_checked
            and not self._pending
            and not self._skip_lf
            and not self._data
            and self._event is None
            and b"\r" not in data
        ):
            cut = data.rfind(b"\n\n")
            if 0 <= cut <= self.max_event_bytes:
                head = data[:cut]
                if head.startswith(b"data: "):
                    payloads = head[6:].split(_NEXT)
                    # every line a "data: " line: each newline is in one of the separators
                    if head.count(b"\n") == 2 * (len(payloads) - 1):
                        rest = data[cut + 2 :]
                        if rest:
                            payloads += [event.data for event in self.feed(rest)]
                        return payloads
        return [event.data for event in self.feed(data)]

    def flush(self) -> list[SSEEvent]:
        """End of stream: the unfinished line is taken as a line, and a pending event with data
        is dispatched (see the module docstring). The parser is then ready for a new stream."""
        events: list[SSEEvent] = []
        if self._pending:
            self._line(bytes(self._pending), events)
        if self._data:
            self._line(b"", events)
        self._pending = bytearray()
        self._skip_lf = False
        self._bom_checked = False
        self._data = []
        self._event = None
        self._size = 0
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:  # blank line: dispatch
            if self._data:
                parts = self._data
                events.append(
                    SSEEvent(self._event, parts[0] if len(parts) == 1 else b"\n".join(parts))
                )
                self._data = []
                self._size = 0
            self._event = None
            return
        if line.startswith(b"data:"):  # the common case first
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._size += len(value) + 1
            if self._size > self.max_event_bytes:
                self._too_large()
            self._data.append(value)
            return
        if line[0] == 0x3A:  # ":" comment (keep-alives)
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if field == b"data":  # "data" with no colon: an empty data line
            self._size += 1
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace") or None
        elif field == b"id":
            if b"\x00" not in value:
                self.last_event_id = value.decode("utf-8", "replace")
        elif field == b"retry" and value.isdigit():
            self.retry_ms = int(value)

    def _too_large(self) -> None:
        raise UpstreamError(f"malformed SSE: event larger than {self.max_event_bytes} bytes")
