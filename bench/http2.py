"""Should the remote engines speak HTTP/2 to upstreams that offer it? This measures it.

Run ``python bench/http2.py`` (needs ``pip install -e '.[dev,bench]'``: hypercorn, h2 and
httpx; ``--quick`` for a smoke test). It starts one server in its own process, bound to
127.0.0.1: hypercorn over TLS (a throwaway authority from ``trustme``) offering ``h2`` and
``http/1.1`` by ALPN, as providers do, and answering ``POST /v1/chat/completions`` with a fixed
chat completion (or, for ``"stream": true``, 64 SSE events and ``[DONE]`` in one burst).

Then, from this process (the event loop the gateway runs on), closed loops of ``concurrency``
workers (1, 16, 64) post a chat request and read the answer whole, through each client in turn:

- *ours*: ``remote/http_client.py`` (HTTP/1.1, a keep-alive pool), what the engines use;
- *aiohttp*: ``aiohttp.ClientSession`` (HTTP/1.1), what they used before;
- *httpx h1* / *httpx h2*: ``httpx.AsyncClient(http2=False / True)``, the asyncio client Python
  projects use for HTTP/2 (through ``h2``). Every answer's protocol is checked.

For each it reports requests/s, p50 latency at concurrency 1 and, the figure that matters for a
proxy whose CPU is the bottleneck, the client's CPU per request (this process's CPU time over
the requests made; the server runs in another process pinned to another CPU). Figures are the
median of ``--repeats`` runs, the clients alternating run by run. ``--markdown PATH`` writes the
table between ``<!-- bench/http2.py:begin -->`` and ``<!-- bench/http2.py:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import harness

CONCURRENCIES = (1, 16, 64)
TOKENS = 64
REQUEST = b'{"model":"m","messages":[{"role":"user","content":"Say hello."}],"max_tokens":64}'
CLIENTS = ("ours", "aiohttp", "httpx h1", "httpx h2")


def _answers() -> tuple[bytes, bytes]:
    words = [f"word{i} " for i in range(TOKENS)]
    whole = (
        b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"' + "".join(words).encode() + b'"},'
        b'"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":64,'
        b'"total_tokens":73}}'
    )
    events = [
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"content":"' + w.encode() + b'"},"finish_reason":null}]}\n\n'
        for w in words
    ]
    return whole, b"".join(events) + b"data: [DONE]\n\n"


# -- the server process ------------------------------------------------------------------------


def serve(port: int, cert: str, key: str) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    whole, streamed = _answers()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        stream = b'"stream":true' in body
        payload, kind = (streamed, b"text/event-stream") if stream else (whole, b"application/json")
        headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = cert, key
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 60
    config.keep_alive_max_requests = 10**9  # its default ends a connection after 1,000
    asyncio.run(
        hypercorn_serve(app, config, shutdown_trigger=lambda: harness.serve_until_stopped(3600))
    )  # type: ignore[arg-type]


# -- the clients -------------------------------------------------------------------------------

Post = Callable[[], Awaitable[int]]


async def make_client(
    kind: str, url: str, context: ssl.SSLContext, limit: int
) -> tuple[Post, Callable[[], Awaitable[None]]]:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k"}
    if kind == "ours":
        from inference_runtime.remote.http_client import HttpClient

        ours = HttpClient(max_connections=limit, connect_timeout_s=5, ssl_context=context)

        async def post_ours() -> int:
            async with await ours.post(url, body=REQUEST, headers=headers) as response:
                return len(await response.read())

        return post_ours, ours.close
    if kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=context))

        async def post_aiohttp() -> int:
            async with session.post(url, data=REQUEST, headers=headers) as response:
                return len(await response.read())

        return post_aiohttp, session.close
    import httpx

    http2 = kind == "httpx h2"
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    client = httpx.AsyncClient(http2=http2, verify=context, limits=limits, timeout=30)
    expected = "HTTP/2" if http2 else "HTTP/1.1"

    async def post_httpx() -> int:
        response = await client.post(url, content=REQUEST, headers=headers)
        if response.http_version != expected:
            raise RuntimeError(f"{kind} spoke {response.http_version}")
        return len(response.content)

    return post_httpx, client.aclose


async def measure(
    post: Post, concurrency: int, warmup_s: float, duration_s: float
) -> tuple[float, float, float]:
    """(requests/s, p50 seconds, CPU seconds per request) of one closed-loop run."""
    latencies: list[float] = []
    measuring = False
    stop_at = 0.0

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            if await post() <= 0:
                raise RuntimeError("an empty answer")
            if measuring:
                latencies.append(time.perf_counter() - started)

    stop_at = time.perf_counter() + warmup_s
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    measuring = True
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stop_at = wall0 + duration_s
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    count = max(len(latencies), 1)
    return len(latencies) / wall, statistics.median(latencies), cpu / count


async def run_all(
    url: str, contexts: dict[str, ssl.SSLContext], windows: harness.Windows
) -> dict[tuple[str, int], tuple[float, float, float]]:
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for concurrency in CONCURRENCIES:
        for repeat in range(windows.repeats):
            order = CLIENTS if repeat % 2 == 0 else tuple(reversed(CLIENTS))
            for kind in order:
                post, close = await make_client(kind, url, contexts[kind], concurrency)
                try:
                    figure = await measure(post, concurrency, windows.warmup_s, windows.duration_s)
                finally:
                    await close()
                results.setdefault((kind, concurrency), []).append(figure)
                rate, _, cpu = figure
                harness.log(
                    f"{kind:9s} c={concurrency:3d}: {rate:8.0f} req/s, {cpu * 1e6:5.0f} µs CPU"
                )
    return {
        key: tuple(statistics.median(f[i] for f in runs) for i in range(3))  # type: ignore[misc]
        for key, runs in results.items()
    }


def render(
    figures: dict[tuple[str, int], tuple[float, float, float]],
    windows: harness.Windows,
    command: str,
    cores: int | None,
) -> str:
    import importlib.metadata as meta

    names = ("aiohttp", "httptools", "httpx", "h2", "hypercorn")
    versions = ", ".join(f"{name} {meta.version(name)}" for name in names)
    lines = [
        f"- Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Machine: {cores} cores, {harness.cpu_model()}; the clients pinned to CPU 0, the"
        " server (hypercorn, TLS, ALPN h2 and http/1.1) to CPU 1",
        f"- Python {sys.version.split()[0]}; {versions}; the clients on the gateway's event loop",
        f"- Command: `{command}`; code: {harness.code_version()}",
        f"- Sizes: concurrency {', '.join(map(str, CONCURRENCIES))}; a {TOKENS}-word chat"
        f" completion read whole; median of {windows.repeats} runs of {windows.duration_s:g} s"
        f" after {windows.warmup_s:g} s of warmup, the clients alternating",
        "",
        "| Client | protocol | p50 at concurrency 1 | req/s at 16 | req/s at 64 |"
        " client CPU per request (at 64) | CPU vs ours |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    base = figures[("ours", 64)][2]
    for kind in CLIENTS:
        protocol = "HTTP/2" if kind == "httpx h2" else "HTTP/1.1"
        p50 = figures[(kind, 1)][1] * 1e3
        at16, at64 = figures[(kind, 16)][0], figures[(kind, 64)][0]
        cpu = figures[(kind, 64)][2]
        lines.append(
            f"| {kind} | {protocol} | {p50:.2f} ms | {at16:,.0f} | {at64:,.0f} |"
            f" {cpu * 1e6:.0f} µs | {cpu / base:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="write the table into this file")
    args = parser.parse_args()
    if args.server:
        os.sched_setaffinity(0, {1})
        serve(int(args.server[0]), args.server[1], args.server[2])
        return
    import trustme

    from inference_runtime.event_loop import run

    cores = harness.core_count()
    windows = (
        harness.Windows(0.2, 0.5, 1) if args.quick else harness.Windows(0.5, 2.0, args.repeats)
    )
    authority = trustme.CA()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        issued = authority.issue_cert("127.0.0.1")
        issued.private_key_pem.write_to_path(str(key))
        issued.cert_chain_pems[0].write_to_path(str(cert))
        port = harness.free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--server", str(port), str(cert), str(key)],
            preexec_fn=harness.die_with_parent,
        )
        try:
            time.sleep(2.0)
            os.sched_setaffinity(0, {0})
            contexts = {}
            for kind in CLIENTS:
                contexts[kind] = context = ssl.create_default_context()
                context.set_alpn_protocols(
                    ["h2", "http/1.1"] if kind == "httpx h2" else ["http/1.1"]
                )
                authority.configure_trust(context)
            url = f"https://127.0.0.1:{port}/v1/chat/completions"
            figures = run(run_all(url, contexts, windows))
        finally:
            harness.stop_process(server, "the server", 10)
    command = "python bench/http2.py" + (" --quick" if args.quick else "")
    report = render(figures, windows, command, cores)
    print(report)
    if args.markdown:
        harness.write_section(
            args.markdown, report, "<!-- bench/http2.py:begin -->", "<!-- bench/http2.py:end -->"
        )


if __name__ == "__main__":
    main()
