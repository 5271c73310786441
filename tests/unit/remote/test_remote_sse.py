"""SSE parsing: the standard's field rules, any split of the bytes, CRLF, flush, the size guard."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_runtime.errors import UpstreamError
from inference_runtime.remote import SSEEvent, SSEParser

OPENAI_STREAM = (
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
    b"data: [DONE]\n\n"
)
ANTHROPIC_STREAM = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start"}\r\n'
    b"\r\n"
    b"event: content_block_delta\r\n"
    b'data: {"type":"content_block_delta","delta":{"text":"Hi"}}\r\n'
    b"\r\n"
    b"event: ping\r\ndata: {}\r\n\r\n"
)


def parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return events


def test_openai_stream() -> None:
    assert parse([OPENAI_STREAM]) == [
        SSEEvent(None, b'{"choices":[{"delta":{"content":"Hel"}}]}'),
        SSEEvent(None, b'{"choices":[{"delta":{"content":"lo"}}]}'),
        SSEEvent(None, b"[DONE]"),
    ]


def test_anthropic_stream_with_crlf_and_event_names() -> None:
    events = parse([ANTHROPIC_STREAM])
    assert [event.event for event in events] == ["message_start", "content_block_delta", "ping"]
    assert events[2].data == b"{}"


@pytest.mark.parametrize(
    "stream", [OPENAI_STREAM, ANTHROPIC_STREAM, b"\xef\xbb\xbf" + OPENAI_STREAM]
)
def test_every_split_point_and_byte_by_byte_give_the_same_events(stream: bytes) -> None:
    whole = parse([stream])
    for cut in range(len(stream) + 1):
        assert parse([stream[:cut], stream[cut:]]) == whole, cut
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == whole


def test_field_rules_of_the_standard() -> None:
    parser = SSEParser()
    stream = (
        b"data: first\n"
        b"data:second\n"  # no space after the colon
        b"data:  two spaces\n"  # only one space is dropped
        b"data\n"  # a field name alone: empty value
        b"unknown: ignored\n"
        b"id: 42\n"
        b"retry: 3000\n"
        b"event: update\n"
        b": a comment\n"
        b"\n"
    )
    assert parser.feed(stream) == [SSEEvent("update", b"first\nsecond\n two spaces\n")]
    assert parser.last_event_id == "42"
    assert parser.retry_ms == 3000
    assert parser.feed(b"retry: soon\nid: a\x00b\ndata: x\n\n") == [SSEEvent(None, b"x")]
    assert parser.retry_ms == 3000 and parser.last_event_id == "42"  # both refused


def test_blank_line_without_data_dispatches_nothing_and_resets_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: lonely\n\n") == []
    assert parser.feed(b"data: x\n\n") == [SSEEvent(None, b"x")]
    assert parser.feed(b"data:\n\n") == [SSEEvent(None, b"")]  # empty data still dispatches


def test_cr_only_and_mixed_line_endings() -> None:
    assert parse([b"data: a\rdata: b\r\rdata: c\r\n\ndata: d\n\r"]) == [
        SSEEvent(None, b"a\nb"),
        SSEEvent(None, b"c"),
        SSEEvent(None, b"d"),
    ]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SSEEvent(None, b"a")]  # a CR alone already ends the line
    assert parser.feed(b"\n") == []  # ... and this LF belongs to it: no second blank line
    assert parser.feed(b"data: b\n\n") == [SSEEvent(None, b"b")]


def test_bom_only_at_the_start() -> None:
    assert parse([b"\xef\xbb", b"\xbfdata: a\n\n"]) == [SSEEvent(None, b"a")]
    parser = SSEParser()
    parser.feed(b"data: a\n\n")
    # a BOM later is a field name like any other (unknown: ignored)
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == []


def test_flush_dispatches_an_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"usage": 1}') == []
    assert parser.flush() == [SSEEvent(None, b'{"usage": 1}')]
    assert parser.flush() == []
    assert parser.feed(b"data: next stream\n\n") == [SSEEvent(None, b"next stream")]


def test_size_guard_on_data_and_on_an_endless_line() -> None:
    parser = SSEParser(max_event_bytes=64)
    parser.feed(b"data: " + b"x" * 40 + b"\n")
    with pytest.raises(UpstreamError, match="malformed SSE: event larger than 64 bytes"):
        parser.feed(b"data: " + b"y" * 40 + b"\n")
    endless = SSEParser(max_event_bytes=64)
    endless.feed(b"data: " + b"z" * 50)
    with pytest.raises(UpstreamError, match="malformed SSE"):
        endless.feed(b"z" * 50)
    fine = SSEParser(max_event_bytes=64)
    for _ in range(100):  # many events, each small: the bound is per event
        assert fine.feed(b"data: " + b"w" * 50 + b"\n\n") == [SSEEvent(None, b"w" * 50)]


def test_max_event_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        SSEParser(max_event_bytes=0)


# -- property: any split of any stream gives the same events ---------------------------------

_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20
)
_line = st.one_of(
    _text.map(lambda t: b"data: " + t.encode()),
    _text.map(lambda t: b"data:" + t.encode()),
    _text.map(lambda t: b"event: " + t.encode()),
    _text.map(lambda t: b":" + t.encode()),
    _text.map(lambda t: b"id: " + t.encode()),
    st.just(b""),
    st.just(b"data"),
)
_eol = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _eol), max_size=30))
    bom = draw(st.booleans())
    return (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + eol for line, eol in lines)


@settings(max_examples=300, deadline=None)
@given(stream=streams(), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_split_gives_the_same_events(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse(chunks) == parse([stream])
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == parse([stream])


@settings(max_examples=200, deadline=None)
@given(datas=st.lists(st.lists(_text, min_size=1, max_size=4), max_size=10), eol=_eol)
def test_data_lines_round_trip(datas: list[list[str]], eol: bytes) -> None:
    stream = b"".join(
        b"".join(b"data: " + part.encode() + eol for part in parts) + eol for parts in datas
    )
    assert parse([stream]) == [SSEEvent(None, "\n".join(parts).encode()) for parts in datas]


def test_only_cr_and_lf_end_lines() -> None:
    # str.splitlines would also break at these; bytes.splitlines (used here) must not
    data = "a\u2028b\x0bc\x0cd\x1ce\x85f".encode()
    assert parse([b"data: " + data + b"\n\n"]) == [SSEEvent(None, data)]


def test_a_big_event_in_tiny_chunks_takes_linear_time() -> None:
    big = b"data: " + b"x" * (1 << 20) + b"\n\n"
    parser = SSEParser()
    events: list[SSEEvent] = []
    started = time.perf_counter()
    for start in range(0, len(big), 64):
        events.extend(parser.feed(big[start : start + 64]))
    assert time.perf_counter() - started < 2.0  # quadratic re-joining took ~8 s here
    assert events == [SSEEvent(None, b"x" * (1 << 20))]


@st.composite
def lf_streams(draw: st.DrawFn) -> bytes:
    """LF-only streams, mostly whole ``data:`` events: the shape the fast path takes."""
    lines = draw(st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\n\n", b"\n\n\n"]))))
    return b"".join(line + eol for line, eol in lines)


@settings(max_examples=300, deadline=None)
@given(stream=lf_streams(), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_the_fast_path_gives_the_events_of_the_line_by_line_path(
    stream: bytes, cuts: list[int]
) -> None:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    one_byte_at_a_time = parse([stream[i : i + 1] for i in range(len(stream))])  # no fast path
    assert parse([stream]) == one_byte_at_a_time
    assert parse(chunks) == one_byte_at_a_time


def test_the_fast_path_keeps_state_between_reads() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: x\n") == []  # an event begun: the next read takes the slow path
    assert parser.feed(b"data: 1\n\ndata: 2\n\ndata: 3\nid: 7\n") == [
        SSEEvent("x", b"1"),
        SSEEvent(None, b"2"),
    ]
    assert parser.feed(b"\ndata: 4\n\nda") == [SSEEvent(None, b"3"), SSEEvent(None, b"4")]
    assert parser.last_event_id == "7"
    assert parser.feed(b"ta: 5\n\n") == [SSEEvent(None, b"5")]
    assert SSEParser(max_event_bytes=8).feed(b"data: 1\n\n") == [SSEEvent(None, b"1")]
    with pytest.raises(UpstreamError, match="larger than 8 bytes"):
        SSEParser(max_event_bytes=8).feed(b"data: 123456789\n\n")


@settings(max_examples=300, deadline=None)
@given(stream=lf_streams(), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_feed_data_gives_the_data_of_the_events(stream: bytes, cuts: list[int]) -> None:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    expected = [event.data for event in parse([stream])]
    for bom in (b"", b"\xef\xbb\xbf"):
        parser = SSEParser()
        datas = [d for chunk in [bom + chunks[0], *chunks[1:]] for d in parser.feed_data(chunk)]
        assert datas + [event.data for event in parser.flush()] == expected


def test_feed_data_of_whole_one_line_events() -> None:
    parser = SSEParser()
    assert parser.feed_data(b"data: 1\n\ndata: \n\ndata: [DONE]\n\ndata: 4") == [
        b"1",
        b"",
        b"[DONE]",
    ]
    assert parser.feed_data(b"\n\n") == [b"4"]
    assert parser.feed_data(b"data: 5\n\n\nevent: x\ndata: 6\n\n") == [b"5", b"6"]
