"""Benchmark of the Ray path: what running a replica in a Ray actor adds to each request and to
each streamed token, against the same replica in the gateway's own process, in one run.

Run ``python bench/cluster.py`` (about a minute; ``--quick`` for a smoke test). It starts a
one-node Ray instance (``ray.init``), then two runtimes in this process, each with one ``fake``
deployment (no model: the engine's own cost is near zero, so what differs is the path):
``local`` (the engine actor in this process) and ``ray`` (``cluster.backend: ray``: a proxy
actor here, the engine in a Ray actor). A client in the same process (aiohttp) measures, the two
runtimes alternating round by round, each figure the median of ``--repeats`` rounds after a
warmup round:

1. request latency: sequential non-streamed chat completions of one token (p50, p99);
2. time to first token of a streamed completion;
3. per streamed token, unpaced: the engine emits as fast as it can (``token_latency_ms: 0``);
   (last token - first token) / (tokens - 1) of one 256-token stream: the cost of a token;
4. per streamed token, paced at 2 ms (``token_latency_ms: 2``): the mean and p99 gap between
   tokens at the client (a polling path would show here);
5. throughput: 8 concurrent clients of non-streamed 16-token completions (requests/s).

It prints one markdown table; ``--markdown PATH`` also writes it into PATH between the markers
``<!-- bench/cluster.py:begin -->`` and ``<!-- bench/cluster.py:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from harness import (
    code_version,
    core_count,
    cpu_model,
    log,
    millis,
    percentiles,
    write_section,
)

BEGIN_MARKER = "<!-- bench/cluster.py:begin -->"
END_MARKER = "<!-- bench/cluster.py:end -->"
PATHS = ("local", "ray")


def config(backend: str) -> Any:
    from inference_runtime import RuntimeConfig

    def fake(name: str, **runtime_config: Any) -> dict[str, Any]:
        return {
            "name": name,
            "runtime": "fake",
            "runtime_config": {"output_tokens": 100_000, **runtime_config},
            "serving": {"max_concurrent": 64, "queue_capacity": 256},
        }

    return RuntimeConfig.from_dict(
        {
            "gateway": {"host": "127.0.0.1", "port": 0},
            "deployments": [fake("fast"), fake("paced", token_latency_ms=2)],
            "storage": {"path": ":memory:"},
            "cluster": {"backend": backend, "replica_cpus": 0.5},
        }
    )


class Client:
    def __init__(self, http: aiohttp.ClientSession, address: tuple[str, int]) -> None:
        self.http = http
        self.url = f"http://{address[0]}:{address[1]}/v1/chat/completions"

    def body(self, model: str, tokens: int, stream: bool) -> dict[str, Any]:
        return {
            "model": model,
            "messages": [{"role": "user", "content": "Say something"}],
            "max_tokens": tokens,
            "stream": stream,
        }

    async def request(self, model: str, tokens: int) -> float:
        start = time.perf_counter()
        async with self.http.post(self.url, json=self.body(model, tokens, False)) as response:
            data = await response.json()
        assert response.status == 200, data
        assert data["usage"]["completion_tokens"] == tokens, data
        return time.perf_counter() - start

    async def stream(self, model: str, tokens: int) -> tuple[float, list[float]]:
        """(time to first token, arrival time of every token)."""
        start = time.perf_counter()
        arrivals: list[float] = []
        async with self.http.post(self.url, json=self.body(model, tokens, True)) as response:
            assert response.status == 200, await response.text()
            async for line in response.content:
                if line.startswith(b"data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        arrivals.append(time.perf_counter())
        assert len(arrivals) == tokens, len(arrivals)
        return arrivals[0] - start, arrivals


async def measure(client: Client, sizes: dict[str, int]) -> dict[str, float]:
    figures: dict[str, float] = {}
    latencies = [await client.request("fast", 1) for _ in range(sizes["requests"])]
    figures["request_p50"], figures["request_p99"] = percentiles(latencies)
    ttfts = [(await client.stream("fast", 8))[0] for _ in range(sizes["streams"])]
    figures["ttft_p50"], _ = percentiles(ttfts)
    per_token = []
    for _ in range(3):
        _, arrivals = await client.stream("fast", 256)
        per_token.append((arrivals[-1] - arrivals[0]) / (len(arrivals) - 1))
    figures["token_unpaced"] = statistics.median(per_token) * 1e6
    gaps: list[float] = []
    for _ in range(3):
        _, arrivals = await client.stream("paced", 64)
        gaps += [b - a for a, b in itertools.pairwise(arrivals)]
    figures["token_paced_mean"] = statistics.mean(gaps) * 1e3
    figures["token_paced_p99"] = percentiles(gaps)[1]

    async def worker(count: int) -> None:
        for _ in range(count):
            await client.request("fast", 16)

    start = time.perf_counter()
    per_worker = sizes["throughput"] // 8
    await asyncio.gather(*(worker(per_worker) for _ in range(8)))
    figures["throughput"] = 8 * per_worker / (time.perf_counter() - start)
    return figures


def whole(value: float) -> str:
    return f"{value:.0f}"


ROWS: list[tuple[str, str, str, Callable[[float], str]]] = [
    ("request_p50", "request latency p50, 1 token, not streamed", "ms", millis),
    ("request_p99", "request latency p99, 1 token, not streamed", "ms", millis),
    ("ttft_p50", "time to first token p50, streamed", "ms", millis),
    (
        "token_unpaced",
        "per streamed token, engine unpaced (256 tokens)",
        "µs",
        lambda v: f"{v:.0f}",
    ),
    ("token_paced_mean", "gap between tokens, engine paced at 2 ms: mean", "ms", millis),
    ("token_paced_p99", "gap between tokens, engine paced at 2 ms: p99", "ms", millis),
    ("throughput", "8 concurrent clients, 16-token requests", "req/s", whole),
]


def report(results: dict[str, dict[str, float]], sizes: dict[str, int], repeats: int) -> str:
    import ray

    lines = [
        f"Run {datetime.now().strftime('%Y-%m-%d %H:%M')} on {cpu_model()} ({core_count()} "
        f"cores), Python {sys.version.split()[0]}, Ray {ray.__version__}, {code_version()}; "
        f"median of {repeats} rounds, {sizes['requests']} requests and {sizes['streams']} "
        "streams a round.",
        "",
        "| figure | unit | in process | Ray actor | added by Ray | Ray / in process |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, label, unit, fmt in ROWS:
        local, remote = results["local"][key], results["ray"][key]
        ratio = remote / local if local else float("nan")
        lines.append(
            f"| {label} | {unit} | {fmt(local)} | {fmt(remote)} | {fmt(remote - local)} "
            f"| {ratio:.2f}x |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> str:
    import ray

    from inference_runtime import Runtime

    sizes = {"requests": 300, "streams": 50, "throughput": 800}
    if args.quick:
        sizes = {"requests": 20, "streams": 5, "throughput": 80}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runtimes = {path: Runtime(config(path)) for path in PATHS}
    try:
        for runtime in runtimes.values():
            await runtime.start()
        async with aiohttp.ClientSession() as http:
            clients = {p: Client(http, rt.address) for p, rt in runtimes.items() if rt.address}
            await wait_ready(clients)
            rounds: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
            for round_ in range(args.repeats + 1):
                order = PATHS if round_ % 2 == 0 else PATHS[::-1]
                for path in order:
                    figures = await measure(clients[path], sizes)
                    log(f"round {round_} {path}: {figures}")
                    if round_ > 0:  # the first round warms up
                        rounds[path].append(figures)
        results = {
            path: {key: statistics.median(r[key] for r in rounds[path]) for key, *_ in ROWS}
            for path in PATHS
        }
    finally:
        for runtime in runtimes.values():
            await runtime.stop()
        ray.shutdown()
    return report(results, sizes, args.repeats)


async def wait_ready(clients: dict[str, Client]) -> None:
    deadline = time.perf_counter() + 120
    for client in clients.values():
        while True:
            try:
                await client.request("fast", 1)
                await client.request("paced", 1)
                break
            except (AssertionError, aiohttp.ClientError):
                if time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write the table into this file")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    table = asyncio.run(run(args))
    print(table)
    if args.markdown:
        write_section(args.markdown, table, BEGIN_MARKER, END_MARKER)


if __name__ == "__main__":
    main()
