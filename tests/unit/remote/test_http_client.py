"""``HttpClient`` against a raw socket server that answers with scripted bytes: framing,
keep-alive, the pool's bound, and every way an answer can go wrong."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from inference_runtime.event_loop import run
from inference_runtime.remote.http_client import HttpClient, HttpConnectionError
from support.raw_http import Script, client, held_until, ok, post, reply, serving


async def _a_length_delimited_answer_and_what_was_sent() -> None:
    async with serving(reply(ok(b'{"a":1}', b"X-Many: 1\r\nx-many: 2\r\n"))) as (raw, url):
        http = client()
        async with await http.post(url, body=b'{"q":1}', headers={"Accept": "x/y"}) as response:
            assert response.status == 200
            assert response.headers["x-many"] == "1, 2"
            assert response.headers["content-type"] == "application/json"
            assert await response.read() == b'{"a":1}'
        sent = raw.requests[0]
        assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nAccept: x/y\r\n" in sent
        assert b"\r\nContent-Length: 7\r\n" in sent
        assert b"\r\nUser-Agent: inference-runtime/" in sent
        assert sent.endswith(b'\r\n\r\n{"q":1}')
        await http.close()


async def _chunks_arrive_as_they_are_sent_and_the_connection_is_reused() -> None:
    go_on = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    async with serving(chunked, reply(ok(b"again"))) as (raw, url):
        http = client()
        async with await http.post(url, body=b"{}", headers={}) as response:
            assert await response.read_some() == b"first"  # before the rest was even sent
            go_on.set()
            rest = b""
            while piece := await response.read_some():
                rest += piece
            assert rest == b"second"
        assert await post(http, url) == (200, b"again")
        assert raw.connections == 1
        stats = http.statistics()
        assert (stats.opened, stats.requests, stats.open, stats.idle) == (1, 2, 1, 1)
        await http.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_framing_and_keep_alive_on_either_event_loop(loop: str) -> None:
    run(_a_length_delimited_answer_and_what_was_sent(), choice=loop)  # type: ignore[arg-type]
    run(_chunks_arrive_as_they_are_sent_and_the_connection_is_reused(), choice=loop)  # type: ignore[arg-type]


def stream_then_end(end_after_s: float | None) -> Script:
    """A stream whose last event comes at once and whose terminator comes later, or never."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"e\r\ndata: [DONE]\n\n\r\n")
        await writer.drain()
        if end_after_s is None:
            await asyncio.sleep(30)
            return
        await asyncio.sleep(end_after_s)
        writer.write(b"0\r\n\r\n")

    return script


async def read_to_done(http: HttpClient, url: str) -> None:
    async with await http.post(url, body=b"{}", headers={}) as response:
        seen = b""
        while b"[DONE]" not in seen:
            seen += await response.read_some()
        # left here, as a stream's reader leaves at its last event


async def test_a_stream_left_at_its_last_event_goes_back_to_the_pool_when_its_end_comes() -> None:
    async with serving(stream_then_end(0.03), stream_then_end(0.0), reply(ok(b"3"))) as (raw, url):
        http = client()
        await read_to_done(http, url)
        assert http.statistics().idle == 0  # its end is still on the way
        await asyncio.sleep(0.1)
        assert http.statistics().idle == 1
        await read_to_done(http, url)
        await asyncio.sleep(0.05)
        assert await post(http, url) == (200, b"3")
        assert raw.connections == 1
        await http.close()


async def test_a_stream_whose_end_never_comes_is_closed_and_its_slot_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inference_runtime.remote import http_connection

    monkeypatch.setattr(http_connection, "DRAIN_S", 0.05)
    async with serving(stream_then_end(None), reply(ok(b"next"))) as (raw, url):
        http = client(max_connections=1)
        await read_to_done(http, url)
        assert http.statistics().open == 1
        assert await post(http, url) == (200, b"next")  # waited for the slot, on a new one
        assert raw.connections == 2
        await http.close()


@pytest.mark.parametrize(
    ("first", "body"),
    [
        # Connection: close, and a body that ends with the connection
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end", b"to the end"),
        (ok(b"one"), b"one"),  # keep-alive said, then closed anyway while idle
    ],
)
async def test_a_connection_the_server_ends_is_replaced(first: bytes, body: bytes) -> None:
    async with serving(reply(first, close=True), reply(ok(b"new"))) as (raw, url):
        http = client()
        assert await post(http, url) == (200, body)
        await asyncio.sleep(0.05)
        assert await post(http, url) == (200, b"new")
        assert raw.connections == 2
        await http.close()


async def test_interim_answers_are_skipped_for_the_final_one() -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
    async with serving(reply(interim + ok(b"final", b"X-Final: yes\r\n"))) as (_, url):
        http = client()
        async with await http.post(url, body=b"{}", headers={}) as response:
            assert (response.status, await response.read()) == (200, b"final")
            assert "link" not in response.headers
            assert response.headers["x-final"] == "yes"
        assert http.statistics().idle == 1  # read whole: reusable
        await http.close()


async def test_a_body_cut_short_fails_and_the_connection_is_not_reused() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."
    async with serving(reply(cut, close=True), reply(ok(b"fine"))) as (raw, url):
        http = client()
        with pytest.raises(HttpConnectionError, match="closed the connection"):
            await post(http, url)
        assert await post(http, url) == (200, b"fine")
        assert raw.connections == 2
        assert http.statistics().open == 1
        await http.close()


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"this is not http\r\n\r\n", "not valid HTTP"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not valid HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx", "'br'"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
            "decompress",
        ),
    ],
)
async def test_a_malformed_answer_is_a_connection_error(answer: bytes, match: str) -> None:
    async with serving(reply(answer), reply(ok(b"next"))) as (raw, url):
        http = client()
        with pytest.raises(HttpConnectionError, match=match):
            await post(http, url)
        assert await post(http, url) == (200, b"next")  # on a new connection
        assert raw.connections == 2
        await http.close()


async def test_junk_after_a_whole_answer_spoils_the_connection_not_the_answer() -> None:
    async with serving(reply(ok(b"whole") + b"junk\r\n\r\n"), reply(ok(b"next"))) as (raw, url):
        http = client()
        assert await post(http, url) == (200, b"whole")
        assert await post(http, url) == (200, b"next")
        assert raw.connections == 2
        await http.close()


async def test_a_gzipped_body_is_decoded() -> None:
    packed = gzip.compress(b'{"text": "' + b"word " * 200 + b'"}')
    answer = ok(packed, b"Content-Encoding: gzip\r\n")
    async with serving(reply(answer)) as (_, url):
        http = client()
        status, body = await post(http, url)
        assert (status, body.count(b"word ")) == (200, 200)
        await http.close()


async def test_the_pool_never_opens_more_than_its_bound_and_serves_every_waiter() -> None:
    release = asyncio.Event()

    async with serving(*[held_until(release)] * 6) as (raw, url):
        http = client(max_connections=2)
        calls = [asyncio.create_task(post(http, url)) for _ in range(6)]
        await asyncio.sleep(0.1)
        assert http.statistics().waiting == 4
        release.set()
        assert await asyncio.gather(*calls) == [(200, b"done")] * 6
        assert raw.most_open == 2
        assert http.statistics().open == 2
        await http.close()


async def test_a_cancelled_call_closes_its_connection_and_frees_its_slot() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with serving(never, reply(ok(b"after"))) as (_, url):
        http = client(max_connections=1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await post(http, url)
        assert http.statistics().open == 0
        assert await post(http, url) == (200, b"after")
        await http.close()


async def test_a_cancelled_waiter_leaves_the_queue_and_the_others_are_served() -> None:
    release = asyncio.Event()

    async with serving(held_until(release), held_until(release)) as (_, url):
        http = client(max_connections=1)
        first = asyncio.create_task(post(http, url))
        gone = asyncio.create_task(post(http, url))
        last = asyncio.create_task(post(http, url))
        await asyncio.sleep(0.05)
        gone.cancel()
        release.set()
        assert await first == (200, b"done")
        assert await last == (200, b"done")
        assert gone.cancelled()
        assert http.statistics().waiting == 0
        await http.close()


async def test_connecting_to_nothing_is_a_connection_error_and_a_slow_connect_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving() as (_, url):
        pass  # closed: nothing listens there now
    http = client()
    with pytest.raises(HttpConnectionError, match="cannot connect"):
        await post(http, url)
    assert http.statistics().open == 0

    loop = asyncio.get_running_loop()

    async def slow(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(loop, "create_connection", slow)
    http = HttpClient(max_connections=1, connect_timeout_s=0.05)
    with pytest.raises(TimeoutError, match=r"took over 0\.05 s"):
        await post(http, url)
    assert http.statistics().open == 0


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with serving() as (raw, url):
        http = client()
        with pytest.raises(ValueError, match="line break"):
            await http.post(url, body=b"", headers={"X-Evil": "a\r\nHost: elsewhere"})
        assert raw.requests == []
        assert http.statistics().opened == 0


async def test_a_closed_client_closes_its_idle_connections_and_refuses_calls() -> None:
    async with serving(reply(ok(b"one"))) as (raw, url):
        http = client()
        await post(http, url)
        await http.close()
        await asyncio.sleep(0.05)
        assert raw.open_now == 0
        with pytest.raises(HttpConnectionError, match="closed"):
            await post(http, url)


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        asyncio.run(post(client(), "ftp://example.com/x"))
