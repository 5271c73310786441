"""Which proxy, if any, an upstream is reached through, and the tunnel through one.

Decided once per origin (scheme, host, port), never per request. A deployment's own
``runtime_config.proxy`` wins (``null``: never a proxy); else the environment's, as curl and
httpx read it: ``https_proxy`` for https, ``http_proxy`` for http, ``all_proxy`` for either,
``no_proxy`` for the hosts reached directly. An http upstream goes through the proxy in
absolute form (``POST http://host/path``); an https one through a CONNECT tunnel, TLS with the
upstream inside it. Credentials in a proxy URL (``http://user:pass@proxy:3128``) go as
``Proxy-Authorization: Basic`` and nowhere else: a ``Proxy`` prints as its host and port.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from inference_runtime.config.environment import ProxyEnvironment

CONNECT_HEAD_LIMIT = 16384
"""The most a proxy's answer to CONNECT may take before its blank line."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)
    """The ``Proxy-Authorization`` value, from the URL's credentials."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """What of it must be redacted: the password and the header value."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def header(self) -> str:
        """The ``Proxy-Authorization`` line, or nothing."""
        return f"Proxy-Authorization: {self.authorization}\r\n" if self.authorization else ""


def parse_proxy(url: str, *, field_name: str) -> Proxy:
    """A proxy URL (``http://[user:pass@]host[:port]``, a bare ``host:port`` too, as curl
    takes it); errors name ``field_name``, never the URL (it may hold a password)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{field_name}: not a proxy URL") from None
    if parts.scheme.lower() != "http":
        raise ValueError(f"{field_name}: only http:// proxies are supported (CONNECT over TCP)")
    if not parts.hostname:
        raise ValueError(f"{field_name}: the proxy URL names no host")
    authorization: str | None = None
    secrets: tuple[str, ...] = ()
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
        secrets = tuple(s for s in (password, token) if s)
    return Proxy(parts.hostname, port, authorization, secrets)


@dataclass(frozen=True, slots=True)
class ProxyChoice:
    """The proxies of one HTTP client, and the hosts it reaches directly."""

    http: Proxy | None = None
    https: Proxy | None = None
    bypass: tuple[str, ...] = ()
    """``no_proxy`` entries, lower case."""

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or _bypassed(self.bypass, host.lower(), port):
            return None
        return proxy

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for p in (self.http, self.https) if p is not None for s in p.secrets)


NO_PROXY = ProxyChoice()


def choose_proxies(configured: str | None, environment: ProxyEnvironment | None) -> ProxyChoice:
    """``configured``: the deployment's ``proxy`` (a URL; ``None`` turns proxies off);
    ``environment``: the proxy variables, used when the deployment names no proxy of its own
    (pass ``None`` with a ``configured`` value)."""
    if environment is None:
        if configured is None:
            return NO_PROXY
        proxy = parse_proxy(configured, field_name="runtime_config.proxy")
        return ProxyChoice(http=proxy, https=proxy)
    http = environment.http or environment.all
    https = environment.https or environment.all
    bypass = tuple(e.strip().lower() for e in environment.no_proxy.split(",") if e.strip())
    return ProxyChoice(
        http=parse_proxy(http, field_name="the http_proxy variable") if http else None,
        https=parse_proxy(https, field_name="the https_proxy variable") if https else None,
        bypass=bypass,
    )


def _bypassed(entries: tuple[str, ...], host: str, port: int) -> bool:
    host = host.strip("[]").rstrip(".")
    for entry in entries:
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if "/" in name:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080
        address, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return address, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, port = entry.split(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


async def open_tunnel(
    proxy: Proxy, host: str, port: int, loop: asyncio.AbstractEventLoop
) -> socket.socket:
    """A socket connected to ``proxy`` and tunnelled by CONNECT to ``host:port``, for TLS to
    start on (``create_connection(sock=...)``). Raises ``ConnectionError`` naming the proxy
    when it refuses."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    if not infos:
        raise ConnectionError(f"the proxy {proxy.address} has no address")
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{proxy.header()}\r\n"
        await loop.sock_sendall(sock, request.encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            # byte by byte past the status line's reach would be slow; the answer is short and
            # nothing follows it before the TLS handshake we start, so reading ahead is safe
            data = await loop.sock_recv(sock, CONNECT_HEAD_LIMIT)
            if not data:
                raise ConnectionError(
                    f"the proxy {proxy.address} closed the connection instead of tunnelling "
                    f"to {authority}"
                )
            head += data
            if len(head) > CONNECT_HEAD_LIMIT:
                raise ConnectionError(f"the proxy {proxy.address} answered CONNECT with junk")
        if not head.endswith(b"\r\n\r\n"):
            raise ConnectionError(f"the proxy {proxy.address} sent data before the tunnel")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        words = status_line.split(" ", 2)
        if len(words) < 2 or not words[0].startswith("HTTP/1.") or words[1] != "200":
            raise ConnectionError(
                f"the proxy {proxy.address} refused the tunnel to {authority}: "
                f"{status_line[:100]!r}"
            )
    except BaseException:
        sock.close()
        raise
    return sock
