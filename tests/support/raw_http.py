"""A raw socket server that answers HTTP requests with scripted bytes (and the small helpers
around it), for the upstream HTTP client's tests: framing, keep-alive, the pool's bound, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from inference_runtime.remote.http_client import HttpClient

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """Answers each request (read whole first) with the next script; records what it got."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.requests: list[bytes] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.alpn: list[str | None] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        tls = writer.get_extra_info("ssl_object")
        self.alpn.append(tls.selected_alpn_protocol() if tls is not None else None)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                await self.scripts.pop(0)(reader, writer)
                if writer.is_closing():
                    return
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def serving(*scripts: Script) -> AsyncIterator[tuple[RawServer, str]]:
    raw = RawServer(list(scripts))
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield raw, f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.close()


def reply(data: bytes, *, close: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()

    return script


def held_until(release: asyncio.Event) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.write(ok(b"done"))

    return script


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def client(**kwargs: float) -> HttpClient:
    return HttpClient(max_connections=int(kwargs.get("max_connections", 4)), connect_timeout_s=2)


async def post(http: HttpClient, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    async with await http.post(url, body=body, headers={"Authorization": "Bearer k"}) as response:
        return response.status, await response.read()


@asynccontextmanager
async def tls_serving(
    *scripts: Script, alpn: list[str] | None = None
) -> AsyncIterator[tuple[RawServer, str, Any]]:
    """``serving`` over TLS with a throwaway ``trustme`` authority (offering ``alpn`` when
    given); yields the server, its base URL and the authority."""
    import trustme

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    if alpn:
        server_context.set_alpn_protocols(alpn)
    raw = RawServer(list(scripts))
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_context)
    try:
        yield raw, f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", authority
    finally:
        server.close()


def trusting(authority: Any, offer: list[str] | None = None) -> ssl.SSLContext:
    """A client context that trusts ``authority``, offering ``offer`` by ALPN when given."""
    context = ssl.create_default_context()
    authority.configure_trust(context)
    if offer:
        context.set_alpn_protocols(offer)
    return context
