"""``HttpClient``: the pooled keep-alive HTTP/1.1 client a remote replica calls its upstream with.

Why our own rather than aiohttp's client (the gateway's server side is still aiohttp): on every
call aiohttp's client merges default headers, consults a cookie jar, runs tracing hooks, checks
proxies and redirects, and builds URL and header objects; for a proxied request that was more CPU
than the whole rest of the remote path (docs/benchmarks.md). An upstream call needs less: POST a
body, read the answer as it streams or whole, keep connections alive and bound their number,
time out connecting, go through a proxy where one is configured (``remote/proxy.py``, decided
once per origin). The rest of the timeouts is the caller's (``remote/deadline.py``): a
cancelled call closes its connection. Parsing is ``httptools`` (llhttp, in C): chunked and
length-delimited bodies, keep-alive, and a malformed answer refused. HTTP/2 was measured and is
not used: see docs/benchmarks.md ("HTTP/2").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from inference_runtime.remote.http_connection import (
    HttpConnection,
    HttpConnectionError,
    HttpResponse,
)
from inference_runtime.remote.proxy import NO_PROXY, Proxy, ProxyChoice, open_tunnel
from inference_runtime.version import __version__

__all__ = ["HttpClient", "HttpClientStatistics", "HttpConnectionError", "HttpResponse"]

KEEPALIVE_S = 4.0
"""An idle connection older than this is closed rather than reused: servers drop idle
connections after 5 to 75 s (5 s is common), and a request sent on one that is being dropped
is lost."""

_DEFAULT_HEADERS = {
    "User-Agent": f"inference-runtime/{__version__}",
    "Accept-Encoding": "gzip, deflate",
}


@dataclass(frozen=True, slots=True)
class HttpClientStatistics:
    open: int
    """Connections open now, busy or idle."""
    idle: int
    """Open connections waiting for the next request."""
    waiting: int
    """Requests waiting for a connection (all are busy and no more may be opened)."""
    opened: int
    """Connections opened since the client was made."""
    requests: int
    """Requests sent since the client was made."""


class _Target(NamedTuple):
    origin: tuple[str, str, int]
    head: str
    """The request line and ``Host``, up to the other headers."""


class _Pool:
    """The connections to one origin: idle ones reused last-in first-out (the warmest)."""

    def __init__(self) -> None:
        self.idle: list[HttpConnection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[HttpConnection | None]] = deque()


class HttpClient:
    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxyChoice = NO_PROXY,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._proxies = proxies
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, _Target] = {}
        self._closed = False
        self._opened = 0
        self._requests = 0

    async def post(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """Send ``body`` to ``url`` and return once the response's headers have come; read its
        body from the response, inside ``async with``."""
        target = self._targets.get(url) or self._target(url)
        data = target.head + _header_block(headers) + f"Content-Length: {len(body)}\r\n\r\n"
        message = data.encode("latin-1") + body
        connection = await self._acquire(target.origin)
        try:
            connection.send(message)
            self._requests += 1
            while not connection.headers_done:
                await connection.wait()
            return HttpResponse(connection, self._release)
        except BaseException:
            connection.close()
            self._release(connection, False)
            raise

    async def close(self) -> None:
        """Close every idle connection; busy ones close as their responses end. Waiting and
        later requests fail with ``HttpConnectionError``."""
        self._closed = True
        for pool in self._pools.values():
            for connection in pool.idle:
                connection.close()
            pool.open -= len(pool.idle)
            pool.idle.clear()
            while pool.waiters:
                waiter = pool.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)

    def statistics(self) -> HttpClientStatistics:
        pools = self._pools.values()
        return HttpClientStatistics(
            open=sum(p.open for p in pools),
            idle=sum(len(p.idle) for p in pools),
            waiting=sum(len(p.waiters) for p in pools),
            opened=self._opened,
            requests=self._requests,
        )

    # -- connections ---------------------------------------------------------------------------

    async def _acquire(self, origin: tuple[str, str, int]) -> HttpConnection:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise HttpConnectionError("the HTTP client is closed")
            while pool.idle:
                connection = pool.idle.pop()
                if connection.usable and loop.time() - connection.idle_since < self.keepalive_s:
                    return connection
                connection.close()
                pool.open -= 1
            if pool.open < self.max_connections:
                pool.open += 1
                try:
                    return await self._connect(origin, loop)
                except BaseException:
                    pool.open -= 1
                    self._wake_one(pool)
                    raise
            waiter: asyncio.Future[HttpConnection | None] = loop.create_future()
            pool.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if not waiter.done() or waiter.cancelled():
                    _discard(pool.waiters, waiter)
                elif (handed := waiter.result()) is not None:
                    self._release(handed, True)  # handed over as we were cancelled
                else:
                    self._wake_one(pool)  # a free slot was ours: pass it on
                raise
            if handed is not None:
                if handed.usable:
                    return handed
                handed.close()  # dropped by the server on its way to us: it frees a slot
                pool.open -= 1
            # else a slot came free: go round and open one

    async def _connect(
        self, origin: tuple[str, str, int], loop: asyncio.AbstractEventLoop
    ) -> HttpConnection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            context = self._ssl_context or _default_context()
        proxy = self._proxies.for_origin(scheme, host, port)
        via = f" through the proxy {proxy.address}" if proxy is not None else ""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if proxy is None:
                    _, connection = await loop.create_connection(
                        lambda: HttpConnection(loop),
                        host,
                        port,
                        ssl=context,
                        server_hostname=host if context is not None else None,
                    )
                else:
                    connection = await _through(proxy, host, port, context, loop)
        except TimeoutError:
            raise TimeoutError(
                f"connecting to {host}:{port}{via} took over {self.connect_timeout_s} s"
            ) from None
        except OSError as error:  # refused, unreachable, no such host, TLS, the proxy refused
            raise HttpConnectionError(f"cannot connect to {host}:{port}{via}: {error}") from error
        if context is not None:
            transport = connection.transport
            tls = transport.get_extra_info("ssl_object") if transport is not None else None
            chosen = tls.selected_alpn_protocol() if tls is not None else None
            if chosen not in (None, "http/1.1"):  # a context of the caller's offered h2
                connection.close()
                raise HttpConnectionError(
                    f"{host}:{port} chose {chosen}; this client speaks HTTP/1.1"
                )
        self._opened += 1
        connection.origin = origin
        return connection

    def _release(self, connection: HttpConnection, reusable: bool) -> None:
        pool = self._pools[connection.origin]
        if reusable and not self._closed:
            while pool.waiters:
                waiter = pool.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(connection)
                    return
            pool.idle.append(connection)
            return
        if reusable:
            connection.close()
        pool.open -= 1
        self._wake_one(pool)

    def _wake_one(self, pool: _Pool) -> None:
        """A slot came free: the first waiter opens a connection of its own."""
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname
        authority = host if ":" not in host else f"[{host}]"
        if parts.port is not None:
            authority = f"{authority}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n"
        proxy = self._proxies.for_origin(scheme, host, port)
        if proxy is not None and scheme == "http":  # absolute form; https goes by CONNECT
            head = f"POST http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n"
            head += proxy.header()
        if len(self._targets) < 64:  # a replica calls a handful of URLs
            self._targets[url] = target = _Target((scheme, host, port), head)
        else:
            target = _Target((scheme, host, port), head)
        return target


async def _through(
    proxy: Proxy,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    loop: asyncio.AbstractEventLoop,
) -> HttpConnection:
    """A connection to ``host:port`` by way of ``proxy``: to the proxy itself for http (the
    requests name the upstream in absolute form), a CONNECT tunnel with TLS inside for https."""
    if context is None:
        _, connection = await loop.create_connection(
            lambda: HttpConnection(loop), proxy.host, proxy.port
        )
        return connection
    tunnel = await open_tunnel(proxy, host, port, loop)
    try:
        _, connection = await loop.create_connection(
            lambda: HttpConnection(loop), sock=tunnel, ssl=context, server_hostname=host
        )
    except BaseException:
        tunnel.close()
        raise
    return connection


_default_tls: ssl.SSLContext | None = None


def _default_context() -> ssl.SSLContext:
    """The system's authorities, and HTTP/1.1 asked for by ALPN (a server that offers h2 would
    otherwise be free to pick it). Made once: loading the authorities takes milliseconds."""
    global _default_tls
    if _default_tls is None:
        _default_tls = ssl.create_default_context()
        _default_tls.set_alpn_protocols(["http/1.1"])
    return _default_tls


# the default headers a caller's header names leave to add, by those names
_defaults_for: dict[tuple[str, ...], str] = {}


def _header_block(headers: Mapping[str, str]) -> str:
    names = tuple(headers)
    defaults = _defaults_for.get(names)
    if defaults is None:
        given = {name.lower() for name in names}
        defaults = "".join(
            f"{name}: {value}\r\n"
            for name, value in _DEFAULT_HEADERS.items()
            if name.lower() not in given
        )
        if len(_defaults_for) < 64:
            _defaults_for[names] = defaults
    if not headers:
        return defaults
    lines = [f"{name}: {value}" for name, value in headers.items()]
    block = "\r\n".join(lines)
    # a CR or LF of its own in a name or value would end the header early: refuse it
    breaks = len(lines) - 1
    if block.count("\n") != breaks or block.count("\r") != breaks:
        raise ValueError("an upstream request header contains a line break")
    return defaults + block + "\r\n"


def _discard(
    waiters: deque[asyncio.Future[HttpConnection | None]],
    waiter: asyncio.Future[HttpConnection | None],
) -> None:
    with contextlib.suppress(ValueError):
        waiters.remove(waiter)
