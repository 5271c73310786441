"""A remote (``runtime: openai``) deployment pointed at a MockUpstream, for integration tests,
and a forward proxy on loopback to reach it through."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from inference_runtime.testing.mock_upstream import MockUpstream

_TOP_LEVEL = ("idempotent", "replicas", "serving", "pricing")


def remote(upstream: MockUpstream, name: str = "gpt", **config: Any) -> dict[str, Any]:
    """``config``: runtime_config fields, or the deployment's own (``_TOP_LEVEL``). The key is
    read from ``MOCK_KEY``; retries back off 10 ms first."""
    top = {k: config.pop(k) for k in _TOP_LEVEL if k in config}
    return {
        "name": name,
        "runtime": "openai",
        "runtime_config": {
            "base_url": upstream.url,
            "api_key_env": "MOCK_KEY",
            "model": "upstream-model",
            "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 2},
            **config,
        },
        **top,
    }


def anthropic(upstream: MockUpstream, *, key_env: str, name: str = "claude") -> dict[str, Any]:
    """A ``runtime: anthropic`` deployment pointed at ``upstream``, its key read from
    ``key_env``; retries back off 10 ms first."""
    return {
        "name": name,
        "runtime": "anthropic",
        "runtime_config": {
            "base_url": upstream.url,
            "api_key_env": key_env,
            "model": "claude-upstream",
            "retry": {"initial_backoff_s": 0.01, "max_backoff_s": 0.1},
        },
    }


class LoopbackProxy:
    """A small forward proxy on loopback, as a corporate one behaves: CONNECT tunnels (for
    https) and absolute-form requests (for http, forwarded in origin form without
    ``Proxy-Authorization``). ``resolve`` maps names only it knows (``upstream.test``) to
    addresses; with ``authorization`` set, anything else gets 407. ``seen``: (method, target,
    Proxy-Authorization) of every request it got."""

    def __init__(
        self, *, authorization: str | None = None, resolve: dict[str, str] | None = None
    ) -> None:
        self.authorization = authorization
        self.resolve = resolve or {}
        self.seen: list[tuple[str, str, str | None]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LoopbackProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # stopped: end quietly (asyncio's stream callback
            pass  # would report a cancelled handler as an error)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, headers = _parse_head(head)
        self.seen.append((method, target, headers.get("proxy-authorization")))
        if self.authorization is not None and headers.get("proxy-authorization") != (
            self.authorization
        ):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b"Proxy-Authenticate: Basic\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await self._open(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await _pipe_both(reader, writer, up_reader, up_writer)
            return
        parts = urlsplit(target)
        assert parts.hostname, f"not absolute form: {target}"
        up_reader, up_writer = await self._open(parts.hostname, parts.port or 80)
        back = asyncio.create_task(_pipe(up_reader, writer))
        try:
            while True:  # keep-alive: each request in turn, rewritten to origin form
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length)
                up_writer.write(_origin_form(head) + body)
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, headers = _parse_head(head)
                self.seen.append((method, target, headers.get("proxy-authorization")))
        finally:
            back.cancel()
            up_writer.close()

    async def _open(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.resolve.get(host, host), port)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _origin_form(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    method, target, version = lines[0].split(b" ", 2)
    parts = urlsplit(target.decode("latin-1"))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [ln for ln in lines[1:] if not ln.lower().startswith(b"proxy-authorization:")]
    return b"\r\n".join([b" ".join([method, path.encode(), version]), *kept])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
