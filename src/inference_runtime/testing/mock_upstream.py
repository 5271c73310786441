"""``MockUpstream``: an OpenAI- and Anthropic-compatible server on loopback, with scripted faults.

It is the upstream that remote engine cores (and anything else that speaks these APIs) call in
tests and benchmarks: real HTTP on a real socket, deterministic replies, and per-request faults
that reproduce what providers actually do (429 with Retry-After, 5xx/529, resets before and after
the first token, stalls, broken SSE, a key that stopped working)::

    from inference_runtime.testing import Fault, MockUpstream

    async with MockUpstream(api_key="sk-test", tokens_per_response=8) as upstream:
        upstream.script(Fault.status(429, retry_after=1.0), Fault.reset())  # next 2 requests
        upstream.fault_for("poison", Fault.status(500))  # any request whose prompt has it
        client = openai.AsyncOpenAI(base_url=upstream.url, api_key="sk-test")
        ...
        assert upstream.counts["/v1/chat/completions"] == 3
        assert upstream.requests[-1].body["model"] == "gpt-test"

Served: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings``,
``GET /v1/models`` (and ``/v1/models/{id}``), Anthropic's ``POST /v1/messages``. Use ``url``
(``http://127.0.0.1:PORT/v1``) as an OpenAI ``base_url`` and ``base_url`` (no ``/v1``) for
Anthropic's SDK.

Replies: ``tokens_per_response`` words derived from the prompt (the same prompt gives the same
words), capped by ``max_tokens`` / ``max_completion_tokens`` (then ``finish_reason`` is
``"length"``, Anthropic ``"max_tokens"``) and cut before a ``stop`` / ``stop_sequences`` string.
Usage counts whitespace-separated words: prompt tokens over all message contents (and the
Anthropic ``system``), completion tokens over the words sent. ``first_byte_delay_s`` passes
before every response's headers; ``token_delay_s`` before every streamed word (a non-streamed
reply waits the same total before its body, as a real model would).

Order of play for one request: the first-byte delay, then its fault (a scripted fault first, else
the first ``fault_for`` marker found in the prompt), then authentication, then the reply. Every
request to a served path is recorded and consumes at most one scripted fault.

Built for load too (a proxy benchmark sends it thousands of requests a second): the low-level
aiohttp server without router or access log, replies encoded with msgspec, and a stream with no
delay or fault written as one coalesced write. Pass ``record_requests=False`` to keep memory flat.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

from aiohttp import web

from inference_runtime.testing.mock_upstream_faults import Fault, FaultKind
from inference_runtime.testing.mock_upstream_serve import RecordedRequest, UpstreamServing

__all__ = ["Fault", "FaultKind", "MockUpstream", "RecordedRequest"]


class MockUpstream(UpstreamServing):
    """A provider-compatible HTTP server on loopback with scripted faults (see the module doc).

    ``api_key`` / ``api_keys``: the accepted keys (OpenAI routes read ``Authorization: Bearer``,
    ``/v1/messages`` reads ``x-api-key``); ``None`` accepts any request, an empty set none.
    Both can be changed while serving, to test key rotation. ``models``: what ``/v1/models``
    lists and the model a reply names when the request names none.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_keys: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("mock-model",),
        tokens_per_response: int = 16,
        token_delay_s: float = 0.0,
        first_byte_delay_s: float = 0.0,
        embedding_dimensions: int = 16,
        require_anthropic_version: bool = True,
        record_requests: bool = True,
        shutdown_timeout_s: float = 0.25,
        ssl_context: ssl.SSLContext | None = None,
        url_host: str | None = None,
    ) -> None:
        if api_key is not None and api_keys is not None:
            raise ValueError("pass api_key or api_keys, not both")
        if api_key is not None:
            api_keys = (api_key,)
        self._api_keys: frozenset[str] | None = None if api_keys is None else frozenset(api_keys)
        self.host = host
        self.models = list(models) or ["mock-model"]
        self.tokens_per_response = tokens_per_response
        self.token_delay_s = token_delay_s
        self.first_byte_delay_s = first_byte_delay_s
        self.embedding_dimensions = embedding_dimensions
        self.require_anthropic_version = require_anthropic_version
        self.record_requests = record_requests
        self.shutdown_timeout_s = shutdown_timeout_s
        self.ssl_context = ssl_context
        """Serve HTTPS with it (``url`` then says ``https``)."""
        self.url_host = url_host or host
        """The host its URLs name: a name only a test's proxy resolves shows that requests
        went through the proxy."""
        self.requests: list[RecordedRequest] = []
        """Every request received (unless ``record_requests`` is off), oldest first."""
        self.counts: collections.Counter[str] = collections.Counter()
        """Requests per path (``counts["/v1/messages"]``); unknown paths count too."""
        self.active_requests = 0
        """Requests being answered now (streamed or not), delays and stalls included."""
        self.active_streams = 0
        """Streamed responses being written now: drops when a client disconnects mid-stream."""
        self.connections_opened = 0
        """TCP connections accepted so far: a pooling client keeps this at its pool size."""
        self._script: collections.deque[Fault | None] = collections.deque()
        self._markers: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._port = port
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> MockUpstream:
        """Listen (on the same port again after ``stop()``, so a test can bring an upstream
        down and back at the same URL)."""
        if self._listener is not None:
            raise RuntimeError("MockUpstream is already started")
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)

        def accept() -> web.RequestHandler:
            self.connections_opened += 1
            return server()

        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            accept, self.host, self._port, reuse_address=True, backlog=2048, ssl=self.ssl_context
        )
        self._server = server
        self._port = self._listener.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and close every connection; handlers still running (a stall, a slow
        stream) get ``shutdown_timeout_s`` to finish, then are cancelled."""
        listener, server = self._listener, self._server
        self._listener = self._server = None
        if listener is None or server is None:
            return
        listener.close()
        server.pre_shutdown()  # idle keep-alive connections close now, not after the timeout
        await server.shutdown(self.shutdown_timeout_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 1.0)

    async def __aenter__(self) -> MockUpstream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: what Anthropic's SDK takes as ``base_url``."""
        if not self._port:
            raise RuntimeError("MockUpstream is not started: no port yet")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.url_host}:{self._port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what OpenAI clients take as ``base_url``."""
        return self.base_url + "/v1"

    def __repr__(self) -> str:
        keys = "any" if self._api_keys is None else f"{len(self._api_keys)} key(s)"
        where = self.url if self._listener is not None else "stopped"
        return f"MockUpstream({where}, accepts={keys}, requests={sum(self.counts.values())})"

    # -- keys, faults, observation -----------------------------------------------------------

    @property
    def api_key(self) -> str | None:
        """The accepted key when there is exactly one; setting it replaces all accepted keys
        (``None``: accept any)."""
        keys = self._api_keys
        return next(iter(keys)) if keys is not None and len(keys) == 1 else None

    @api_key.setter
    def api_key(self, key: str | None) -> None:
        self._api_keys = None if key is None else frozenset({key})

    @property
    def api_keys(self) -> frozenset[str] | None:
        return self._api_keys

    @api_keys.setter
    def api_keys(self, keys: Iterable[str] | None) -> None:
        self._api_keys = None if keys is None else frozenset(keys)

    def script(self, *faults: Fault | None) -> None:
        """Queue faults for the next requests, one per request in arrival order; ``None`` is a
        placeholder for a request served normally (``script(None, Fault.reset())``)."""
        self._script.extend(faults)

    def fault_for(self, marker: str, fault: Fault | None) -> None:
        """Apply ``fault`` to every request whose prompt contains ``marker`` (``None`` removes
        it). Scripted faults go first: a request that consumes one is not checked for markers."""
        if fault is None:
            self._markers.pop(marker, None)
        else:
            self._markers[marker] = fault

    @property
    def pending_faults(self) -> tuple[Fault | None, ...]:
        """Scripted faults not yet consumed."""
        return tuple(self._script)

    def clear(self) -> None:
        """Forget recorded requests, counts, scripted faults and markers (not the keys)."""
        self.requests.clear()
        self.counts.clear()
        self._script.clear()
        self._markers.clear()

    async def wait_until(
        self, predicate: Callable[[MockUpstream], bool], timeout: float = 5.0
    ) -> None:
        """Poll ``predicate(self)`` until true (e.g. ``lambda u: u.active_streams == 0`` after a
        client disconnects); ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s: {self!r}")
            await asyncio.sleep(0.005)
