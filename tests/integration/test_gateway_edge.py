"""The gateway's edge over real HTTP and raw sockets: only JSON bodies, no foreign Origin or
Host (cross-site and DNS-rebinding pages), read deadlines on heads and bodies, bad input and
bad HTTP answered in OpenAI's error shape without tracebacks, and readiness per deployment."""

from __future__ import annotations

import asyncio
import gzip
import logging
from typing import Any

import aiohttp
import msgspec
import pytest

from inference_runtime import Runtime
from support.runtime import USER, base_url, client, fake, serve, wait_healthy

CHAT = msgspec.json.encode({"model": "fake", "messages": USER, "max_tokens": 2})


def port_of(runtime: Runtime) -> int:
    assert runtime.address is not None
    return runtime.address[1]


async def post(
    runtime: Runtime, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http,
        http.post(base_url(runtime) + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None), dict(response.headers)


async def request(
    runtime: Runtime, method: str, path: str, headers: dict[str, str]
) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url(runtime) + path, headers=headers) as response,
    ):
        body = await response.read()
        return response.status, msgspec.json.decode(body) if body else None, dict(response.headers)


async def exchange(port: int, data: bytes, *, timeout: float = 30.0) -> bytes:
    """Send raw bytes, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def is_openai_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- point 1a: JSON bodies only, no foreign Origin or Host ---------------------------------


async def test_bodies_must_be_json_on_v1_and_admin() -> None:
    async with serve(fake()) as runtime:
        await wait_healthy(runtime, "fake", 1)
        for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
            status, body, _ = await post(
                runtime, "/v1/chat/completions", CHAT, {"Content-Type": content_type}
            )
            assert status == 415 and is_openai_error(body), (content_type, body)
            assert body["error"]["code"] == "unsupported_media_type"
        spec = msgspec.json.encode({"name": "x", "runtime": "fake"})
        status, body, _ = await post(
            runtime, "/admin/deployments", spec, {"Content-Type": "text/plain"}
        )
        assert status == 415 and is_openai_error(body)
        status, listing, _ = await request(runtime, "GET", "/admin/deployments", {})
        assert [d["name"] for d in listing["data"]] == ["fake"]  # nothing was created
        status, body, _ = await post(
            runtime,
            "/v1/chat/completions",
            CHAT,
            {"Content-Type": "application/json; charset=utf-8"},
        )
        assert status == 200, body
        reply = await client(runtime).chat.completions.create(model="fake", messages=USER)
        assert reply.choices[0].message.content  # the official client still works


async def test_foreign_origins_and_hosts_are_refused() -> None:
    async with serve(fake()) as runtime:
        await wait_healthy(runtime, "fake", 1)
        port = port_of(runtime)
        spec = msgspec.json.encode({"name": "x", "runtime": "fake"})
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Host": "evil.example"},
            {"Host": f"evil.example:{port}"},
        ):
            for path, body in (("/v1/chat/completions", CHAT), ("/admin/deployments", spec)):
                status, answer, _ = await post(runtime, path, body, headers)
                assert status == 403 and is_openai_error(answer), (headers, path, answer)
            status, answer, _ = await request(runtime, "GET", "/v1/models", headers)
            assert status == 403 and answer["error"]["type"] == "permission_error"
        # a browser's preflight gets no CORS grant, so the real request never follows
        preflight = {
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        for path in ("/v1/chat/completions", "/admin/deployments"):
            status, _, answer_headers = await request(runtime, "OPTIONS", path, preflight)
            assert status == 403
            assert not any(h.lower().startswith("access-control-") for h in answer_headers)
        _, listing, _ = await request(runtime, "GET", "/admin/deployments", {})
        assert [d["name"] for d in listing["data"]] == ["fake"]
        for headers in (
            {"Origin": f"http://127.0.0.1:{port}"},  # its own page
            {"Origin": "http://localhost:3000"},  # a loopback page, on a loopback server
            {"Host": f"localhost:{port}"},
            {"Host": f"[::1]:{port}"},
        ):
            status, answer, _ = await post(runtime, "/v1/chat/completions", CHAT, headers)
            assert status == 200, (headers, answer)


async def test_allowed_hosts_and_origins_widen_and_narrow() -> None:
    allowed = {"allowed_hosts": ["api.example"], "allowed_origins": ["https://app.example"]}
    async with serve(fake(), **allowed) as runtime:
        await wait_healthy(runtime, "fake", 1)
        for headers in ({"Host": "api.example"}, {"Origin": "https://app.example"}):
            status, answer, _ = await post(runtime, "/v1/chat/completions", CHAT, headers)
            assert status == 200, (headers, answer)
    # on a non-loopback address any Host is served unless the operator names them
    sections = {"auth": {"allow_unauthenticated": True}}
    async with serve(sections=sections, host="0.0.0.0") as runtime:
        status, _, _ = await request(runtime, "GET", "/v1/models", {"Host": "anything.example"})
        assert status == 200
    async with serve(sections=sections, host="0.0.0.0", allowed_hosts=["api.example"]) as runtime:
        status, _, _ = await request(runtime, "GET", "/v1/models", {"Host": "api.example"})
        assert status == 200
        status, _, _ = await request(runtime, "GET", "/v1/models", {"Host": "other.example"})
        assert status == 403


async def test_an_accepted_origin_gets_what_a_browser_needs_and_a_foreign_one_nothing() -> None:
    allowed = {"allowed_origins": ["https://app.example"]}
    async with serve(fake(), **allowed) as runtime:
        await wait_healthy(runtime, "fake", 1)
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-bad header",
        }
        for origin in ("https://app.example", "http://localhost:3000"):
            status, _, headers = await request(
                runtime, "OPTIONS", "/v1/chat/completions", {"Origin": origin, **preflight}
            )
            assert status == 204
            assert headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in headers["Access-Control-Allow-Methods"]
            assert headers["Access-Control-Allow-Headers"] == "authorization, content-type"
            for stream in (False, True):
                body = msgspec.json.encode({**msgspec.json.decode(CHAT), "stream": stream})
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        base_url(runtime) + "/v1/chat/completions",
                        data=body,
                        headers={"Origin": origin, "Content-Type": "application/json"},
                    ) as response,
                ):
                    status, headers = response.status, dict(response.headers)
                    await response.read()
                assert status == 200
                assert headers["Access-Control-Allow-Origin"] == origin
                assert "X-Replica-Id" in headers["Access-Control-Expose-Headers"]
        # a foreign origin: refused, and nothing in the answer lets its page read it
        status, _, headers = await request(
            runtime,
            "OPTIONS",
            "/v1/chat/completions",
            {"Origin": "https://evil.example", **preflight},
        )
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        status, _, headers = await post(
            runtime, "/v1/chat/completions", CHAT, {"Origin": "https://evil.example"}
        )
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        # no Origin (the openai client, curl): no CORS headers at all
        status, _, headers = await post(runtime, "/v1/chat/completions", CHAT)
        assert status == 200 and "Access-Control-Allow-Origin" not in headers


# -- point 6: header and body read deadlines -----------------------------------------------


async def test_a_head_sent_byte_by_byte_is_closed_at_the_header_timeout() -> None:
    async with serve(header_timeout_s=0.5) as runtime:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runtime))
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400
        sent = 0
        try:
            for byte in head:  # ~40 s at most, where the server closes after ~0.5 s
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    break
                try:
                    answer = await asyncio.wait_for(reader.read(), 0.001)
                except TimeoutError:
                    continue
                break
            else:
                raise AssertionError("the connection was held for the whole slow head")
        except ConnectionError:
            answer = b""
        finally:
            writer.close()
        assert sent < len(head)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout() -> None:
    async with serve(header_timeout_s=0.5) as runtime:
        connections = [
            await asyncio.open_connection("127.0.0.1", port_of(runtime)) for _ in range(5)
        ]
        try:
            for reader, _ in connections:  # closed by the server, quietly (no 408 to nobody)
                assert await asyncio.wait_for(reader.read(), 30) == b""
            # a connection that does send its request is served as ever
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(runtime))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            for _, writer in connections:
                writer.close()


async def test_a_stalled_body_is_dropped_and_does_not_hold_the_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inference_runtime.gateway")
    stalled = {
        path: f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"model"'.encode()
        for path in ("/v1/embeddings", "/v1/chat/completions", "/admin/deployments")
    }
    slow = fake(token_latency_ms=20, output_tokens=20)
    async with serve(slow, body_timeout_s=0.5, drain_timeout_s=600) as runtime:
        await wait_healthy(runtime, "fake", 1)
        for data in stalled.values():  # a body that never comes: the connection is closed
            assert await exchange(port_of(runtime), data) == b""
        writers = []
        for data in stalled.values():
            _, writer = await asyncio.open_connection("127.0.0.1", port_of(runtime))
            writer.write(data)
            await writer.drain()
            writers.append(writer)
        stream = await client(runtime).chat.completions.create(
            model="fake", messages=USER, stream=True
        )
        first = await anext(aiter(stream))  # one real request in flight
        # the stop drains (up to 600 s here): the real request finishes, the stalled bodies
        # do not hold it
        await asyncio.wait_for(runtime.stop(), 60)
        assert first.choices[0].delta is not None
        for writer in writers:
            writer.close()
    drains = [r.getMessage() for r in caplog.records if "draining" in r.getMessage()]
    assert drains == ["draining: waiting for 1 request (up to 600 s)"], drains


# -- point 13: deep JSON, bad gzip, bad HTTP ------------------------------------------------


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("levels", [100, 1000, 100_000])
async def test_deeply_nested_json_is_a_400_in_every_free_form_field(
    levels: int, caplog: pytest.LogCaptureFixture
) -> None:
    nested = deep(levels)
    remote = {
        "name": "remote",
        "runtime": "openai",
        "runtime_config": {"base_url": "http://127.0.0.1:9/v1"},
    }
    async with serve(fake(), remote, max_body_bytes=1024 * 1024) as runtime:
        await wait_healthy(runtime, "fake", 1)
        bodies = {
            "/v1/chat/completions": [
                b'{"model":"fake","messages":[{"role":"user","content":"hi"}],"metadata":%s}',
                b'{"model":"fake","messages":[{"role":"user","content":"hi"}],"tools":%s}',
                b'{"model":"fake","messages":[{"role":"user","content":[{"type":"text",'
                b'"text":"hi","extra":%s}]}]}',
                b'{"model":"remote","messages":[{"role":"user","content":"hi"}],"custom":%s}',
                b'{"model":"fake","unknown":%s}',
            ],
            "/v1/completions": [b'{"model":"remote","prompt":"hi","custom":%s}'],
            "/v1/embeddings": [b'{"model":"fake","input":%s}'],
            "/admin/deployments": [
                b'{"name":"x","runtime":"fake","runtime_config":{"output_tokens":%s}}',
                b'{"name":"x","runtime":"openai","runtime_config":{"base_url":'
                b'"http://127.0.0.1:9/v1","headers":%s}}',
            ],
        }
        for path, templates in bodies.items():
            for template in templates:
                status, body, _ = await post(runtime, path, template % nested)
                assert status == 400 and is_openai_error(body), (path, template, body)
        reply = await client(runtime).chat.completions.create(model="fake", messages=USER)
        assert reply.choices  # and the server serves on
    assert errors_logged(caplog) == []


async def test_a_bad_gzip_body_is_a_400_and_a_good_one_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(fake()) as runtime:
        await wait_healthy(runtime, "fake", 1)
        for path in ("/v1/chat/completions", "/admin/deployments"):
            status, body, _ = await post(
                runtime, path, b"this is not gzip at all", {"Content-Encoding": "gzip"}
            )
            assert status == 400 and is_openai_error(body), (path, body)
        status, body, _ = await post(
            runtime, "/v1/chat/completions", gzip.compress(CHAT), {"Content-Encoding": "gzip"}
        )
        assert status == 200, body
        # an encoding the server cannot undo is refused, not read as if it were JSON
        for encoding in ("br", "zstd", "foo"):
            status, body, _ = await post(
                runtime, "/v1/chat/completions", CHAT, {"Content-Encoding": encoding}
            )
            assert status == 415 and body["error"]["code"] == "unsupported_media_type", body
    assert errors_logged(caplog) == []


async def test_bad_http_is_answered_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve() as runtime:
        port = port_of(runtime)
        for data, status in (
            (b"GARBAGE\r\n\r\n", b"400"),
            (b"GET /healthz HTTP/1.1 junk\r\n\r\n", b"400"),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
            (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", b"400"),
        ):
            answer = await exchange(port, data)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split(b" ")[1] == status, answer
            assert is_openai_error(msgspec.json.decode(body)), answer
        status_code, _, _ = await request(runtime, "GET", "/healthz", {})
        assert status_code == 200
    assert errors_logged(caplog) == []
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]


# -- point 19: readiness per deployment ----------------------------------------------------


async def test_one_deployment_that_cannot_serve_leaves_the_server_ready() -> None:
    loading = fake("loading", load_latency_ms=600_000)  # never ready within the test
    async with serve(fake("good"), loading) as runtime:
        await wait_healthy(runtime, "good", 1)
        status, body, _ = await request(runtime, "GET", "/readyz", {})
        assert status == 200 and body["status"] == "ready", body
        assert body["deployments"]["good"]["ready"] is True
        assert body["deployments"]["loading"]["ready"] is False
        assert body["healthy_replicas"] == {"good": 1, "loading": 0}
        status, body, _ = await request(runtime, "GET", "/readyz?deployment=good", {})
        assert status == 200 and body["deployment"] == "good"
        status, body, _ = await request(runtime, "GET", "/readyz?deployment=loading", {})
        assert status == 503 and body["status"] == "not_ready"
        status, body, _ = await request(runtime, "GET", "/readyz?deployment=nope", {})
        assert status == 404 and is_openai_error(body)
    async with serve(fake("loading", load_latency_ms=600_000)) as runtime:
        status, body, _ = await request(runtime, "GET", "/readyz", {})
        assert status == 503 and body["status"] == "not_ready"  # nothing can serve
