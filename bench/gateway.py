"""Benchmark of the HTTP gateway with a zero-latency fake runner, against a bare aiohttp floor.

Run ``python bench/gateway.py`` (``--quick`` for a smoke test). It starts, each in its own
process and bound to 127.0.0.1 only:

1. the gateway, ``inference-runtime serve`` (``python -m inference_runtime.cli.main serve``) with
   one ``runtime: fake`` deployment of one replica that answers 64 tokens at zero latency;
2. the same with two replicas (both in the one server process);
3. the floor: a minimal aiohttp server (``python bench/gateway.py --floor-server PORT``) that
   answers the same JSON body shape at once, or the same 64 SSE frames then ``data: [DONE]``,
   from bytes built at startup: what a Python HTTP server can do at all on this machine.

Then, from this process, a closed-loop load of ``concurrency`` workers (1, 16, 64, 256), each
sending ``POST /v1/chat/completions`` (``max_tokens`` 64) back to back through one aiohttp
``ClientSession`` with a ``TCPConnector(limit=concurrency)``, non-streamed and streamed (each
stream read to ``data: [DONE]``). A run is a warmup, then a measured window: req/s counts each
request by the share of its lifetime inside the window, latencies are those of the requests
started inside it. Each figure is the median of ``--repeats`` runs; the floor and the gateways
alternate run by run, so that a noisy neighbour hits all alike, and a run that other processes
disturbed (``/proc/stat``) is redone after waiting for an idle machine, within
``--noise-budget`` seconds. On a machine with two cores or more the client is pinned to one core
and every server to another. Server CPU (``/proc/PID/stat``) is reported as a share of a core and
per request, the figure least disturbed by the client's limits.

It prints one markdown table; ``--markdown PATH`` also writes it into PATH, between the markers
``<!-- bench/gateway.py:begin -->`` and ``<!-- bench/gateway.py:end -->`` (appended if the
markers are missing). ``--profile DIR`` runs the gateway processes under cProfile and leaves
``DIR/<server>.prof`` (its figures are then not the server's own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from harness import Windows as Sizes
from harness import (
    busy_seconds,
    cancel_on_signals,
    code_version,
    core_count,
    cpu_model,
    cpu_seconds,
    die_with_parent,
    exit_on_signals,
    free_port,
    log,
    log_tail,
    micros,
    millis,
    percent,
    percentiles,
    serve_until_stopped,
    stop_process,
    wait_quiet,
    write_section,
)

BEGIN_MARKER = "<!-- bench/gateway.py:begin -->"
END_MARKER = "<!-- bench/gateway.py:end -->"

MODEL = "fake-chat"
TOKENS = 64
"""Completion tokens per request (``max_tokens``, and the fake runner's natural length)."""
CONCURRENCIES = (1, 16, 64, 256)
PROMPT = [{"role": "user", "content": "Say something"}]
HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"

REQUEST_TIMEOUT_S = 30.0
"""No request of the load may take longer (then it counts as an error)."""
READY_TIMEOUT_S = 30.0
"""A server that does not answer ``/readyz`` with 200 within this long fails the run."""
STOP_TIMEOUT_S = 10.0
"""After SIGTERM a server gets this long to exit, then SIGKILL."""
NOISY = 0.1
"""A row where other processes used more than this fraction of a core (in one of its runs) is
marked as noisy."""
MAX_REDOS = 3
"""A run disturbed by other processes is redone at most this many times."""
FLOOR_LIFETIME_S = 900.0
"""The floor server exits by itself after this long, whatever happens to its parent."""


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    replicas: int | None
    """Replicas of the fake deployment; None for the floor."""


FLOOR = Target("floor", "floor (bare aiohttp)", None)
TARGETS = (
    FLOOR,
    Target("gateway", "gateway, 1 replica", 1),
    Target("gateway2", "gateway, 2 replicas", 2),
)


# -- the floor server ------------------------------------------------------------------------


def _floor_payloads() -> tuple[bytes, list[bytes]]:
    """The non-streamed body and the streamed frames, shaped like the gateway's."""
    words = [f"word{i}" if i == 0 else f" word{i}" for i in range(TOKENS)]
    rid, created = "chatcmpl-" + "0" * 32, int(time.time())
    body = msgspec.json.encode(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(words), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": TOKENS, "total_tokens": 4 + TOKENS},
        }
    )
    frames = []
    for i, word in enumerate(words):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        chunk = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "length" if i == TOKENS - 1 else None,
                }
            ],
        }
        frames.append(b"data: " + msgspec.json.encode(chunk) + b"\n\n")
    return body, frames


async def _floor_main(port: int, lifetime: float) -> None:
    body, frames = _floor_payloads()
    decode = msgspec.json.decode

    async def chat(request: web.Request) -> web.StreamResponse:
        payload: dict[str, Any] = decode(await request.read())
        if not payload.get("stream"):
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for frame in frames:  # one write per token, as a server streaming tokens does
            await response.write(frame)
        await response.write(DONE)
        await response.write_eof()
        return response

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await serve_until_stopped(lifetime)
    finally:
        await runner.cleanup()


# -- server processes ------------------------------------------------------------------------


def gateway_config(replicas: int, port: int) -> dict[str, Any]:
    return {
        "gateway": {"host": "127.0.0.1", "port": port, "drain_timeout_s": 5},
        "deployments": [
            {
                "name": MODEL,
                "runtime": "fake",
                "replicas": replicas,
                "runtime_config": {"token_latency_ms": 0, "output_tokens": TOKENS},
                "serving": {"max_concurrent": 256, "queue_capacity": 1024},
            }
        ],
    }


@dataclass
class Server:
    target: Target
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 2000) -> str:
        return log_tail(self.log_path, chars)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.port}/readyz"
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.target.label} exited with {code} before it was ready:\n"
                    + self.log_tail()
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                opener.open(url, timeout=1) as reply,
            ):
                if reply.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.target.label}: /readyz not 200 within {timeout:g} s:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process, self.target.label, STOP_TIMEOUT_S)


def start_server(
    target: Target, workdir: Path, cpu: int | None, profile_dir: Path | None
) -> Server:
    port = free_port()
    env = {**os.environ, "INFERENCE_RUNTIME_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    if target.replicas is None:
        command = [sys.executable, str(Path(__file__).resolve()), "--floor-server", str(port)]
    else:
        config = workdir / f"{target.key}.yaml"
        config.write_text(json.dumps(gateway_config(target.replicas, port)))  # JSON is YAML
        command = [sys.executable]
        if profile_dir is not None:
            command += ["-m", "cProfile", "-o", str(profile_dir / f"{target.key}.prof")]
        command += ["-m", "inference_runtime.cli.main", "serve", "--config", str(config)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
    log_path = workdir / f"{target.key}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
    server = Server(target, port, process, log_path)
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(process.pid, {cpu})
    return server


# -- the load --------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured window against one server."""

    requests: int
    """Requests started in the window (all of them were waited for)."""
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    tokens_per_s: float | None
    server_cpu: float
    """Fraction of one core the server used in the window."""
    server_cpu_per_request_us: float
    client_cpu: float
    other_cpu: float
    """CPU the rest of the machine used in the window (other processes), in cores."""


@dataclass(frozen=True, slots=True)
class Sample:
    start: float
    end: float
    first: float | None
    """When the first bytes of the body arrived (streams)."""
    tokens: int
    ok: bool


async def run_load(
    server: Server, *, stream: bool, concurrency: int, warmup: float, duration: float
) -> Run:
    """``concurrency`` workers send requests back to back: a warmup, then the window.

    Throughput counts every request by the fraction of its lifetime inside the window (with
    zero-latency batching, a whole cohort of streams ends at once; counting only the ends would
    quantise the figure). Latencies are those of the requests started inside the window; the
    workers keep the load on until the last of them has ended.
    """
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    body = msgspec.json.encode(
        {"model": MODEL, "messages": PROMPT, "max_tokens": TOKENS, "stream": stream}
    )
    expected_usage = f'"completion_tokens":{TOKENS}'.encode()
    clock = time.perf_counter
    window_start = clock() + warmup
    window_end = window_start + duration
    samples: list[Sample] = []
    pending = 0
    """Requests started in the window and not ended yet."""
    cpu: dict[str, float] = {}

    def sample_cpu(key: str) -> None:
        cpu["t" + key] = clock()
        cpu["s" + key] = cpu_seconds(server.process.pid)
        cpu["c" + key] = time.process_time()
        cpu["m" + key] = busy_seconds()

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, window_start - clock()))
        sample_cpu("0")
        await asyncio.sleep(max(0.0, window_end - clock()))
        sample_cpu("1")

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal pending
        post = session.post
        while (start := clock()) < window_end or pending:
            measured = window_start <= start < window_end
            pending += measured
            first: float | None = None
            tokens = 0
            try:
                async with post(url, data=body, headers=HEADERS) as response:
                    if stream:
                        buffer = bytearray()
                        async for chunk in response.content.iter_any():
                            if first is None:
                                first = clock()
                            buffer += chunk
                        tokens = buffer.count(b"data: ") - 1
                        ok = response.status == 200 and buffer.endswith(DONE) and tokens == TOKENS
                    else:
                        data = await response.read()
                        tokens = TOKENS
                        ok = response.status == 200 and expected_usage in data
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            finally:
                pending -= measured
            end = clock()
            if end > window_start and start < window_end:
                samples.append(Sample(start, end, first, tokens, ok))
            if not ok:
                await asyncio.sleep(0.01)  # no busy loop against a failing server

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu_task = asyncio.create_task(sampler())
        try:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            await cpu_task
        finally:
            cpu_task.cancel()

    done = 0.0
    tokens = 0.0
    for s in samples:
        if s.ok:
            inside = min(s.end, window_end) - max(s.start, window_start)
            share = inside / (s.end - s.start) if s.end > s.start else 1.0
            done += share
            tokens += share * s.tokens
    started = [s for s in samples if window_start <= s.start < window_end]
    measured = [s for s in started if s.ok]
    p50, p99 = percentiles([s.end - s.start for s in measured])
    ttfts = [s.first - s.start for s in measured if s.first is not None]
    elapsed = cpu["t1"] - cpu["t0"]
    server_cpu = cpu["s1"] - cpu["s0"]
    client_cpu = cpu["c1"] - cpu["c0"]
    other_cpu = max(0.0, cpu["m1"] - cpu["m0"] - server_cpu - client_cpu)
    return Run(
        requests=len(started),
        errors=len(started) - len(measured),
        rps=done / duration,
        p50_ms=p50,
        p99_ms=p99,
        ttft_p50_ms=percentiles(ttfts)[0] if stream else None,
        tokens_per_s=tokens / duration if stream else None,
        server_cpu=server_cpu / elapsed,
        server_cpu_per_request_us=server_cpu / done * 1e6 if done else float("nan"),
        client_cpu=client_cpu / elapsed,
        other_cpu=other_cpu / elapsed,
    )


def median_run(runs: Sequence[Run]) -> Run:
    def med(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return Run(
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        ttft_p50_ms=med([r.ttft_p50_ms for r in runs]),
        tokens_per_s=med([r.tokens_per_s for r in runs]),
        server_cpu=statistics.median(r.server_cpu for r in runs),
        server_cpu_per_request_us=statistics.median(r.server_cpu_per_request_us for r in runs),
        client_cpu=statistics.median(r.client_cpu for r in runs),
        other_cpu=max(r.other_cpu for r in runs),
    )


@dataclass
class Cell:
    stream: bool
    concurrency: int
    runs: dict[str, Run] = field(default_factory=dict)
    """Target key -> the median run."""


@dataclass
class Noise:
    """Runs disturbed by other processes are redone, within a budget of seconds."""

    budget_s: float
    spent_s: float = 0.0
    redone: int = 0
    kept: int = 0
    still_noisy: int = 0

    @property
    def left_s(self) -> float:
        return self.budget_s - self.spent_s


async def run_all(servers: Sequence[Server], sizes: Sizes, noise: Noise) -> list[Cell]:
    clock = time.perf_counter
    cells = []
    for stream in (False, True):
        for concurrency in CONCURRENCIES:
            mode = "streamed" if stream else "non-streamed"
            log(f"{mode}, concurrency {concurrency}: {sizes.repeats} x {sizes.duration_s:g} s")
            runs: dict[str, list[Run]] = {s.target.key: [] for s in servers}
            for _ in range(sizes.repeats):
                for server in servers:
                    for attempt in range(1 + MAX_REDOS):
                        if attempt:
                            started = clock()
                            await wait_quiet(min(noise.left_s, 10.0), NOISY)
                        run = await run_load(
                            server,
                            stream=stream,
                            concurrency=concurrency,
                            warmup=sizes.warmup_s,
                            duration=sizes.duration_s,
                        )
                        if attempt:
                            noise.redone += 1
                            noise.spent_s += clock() - started
                        if run.other_cpu <= NOISY or noise.left_s <= 0:
                            break
                    noise.kept += 1
                    noise.still_noisy += run.other_cpu > NOISY
                    runs[server.target.key].append(run)
            cells.append(
                Cell(stream, concurrency, {key: median_run(rs) for key, rs in runs.items()})
            )
    return cells


async def measure(servers: Sequence[Server], sizes: Sizes, noise: Noise) -> list[Cell]:
    """``run_all``, cancelled cleanly by SIGTERM or SIGHUP."""
    cancel_on_signals()
    return await run_all(servers, sizes, noise)


@contextlib.contextmanager
def servers_running(
    targets: Sequence[Target], cpu: int | None, profile_dir: Path | None
) -> Iterator[list[Server]]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        servers = []
        for target in targets:
            server = start_server(target, Path(tmp), cpu, profile_dir)
            stack.callback(server.stop)
            servers.append(server)
        for server in servers:
            server.wait_ready()
            log(f"{server.target.label}: pid {server.process.pid}, port {server.port}")
        yield servers


# -- the table -------------------------------------------------------------------------------


def render_table(cells: Sequence[Cell], targets: Sequence[Target]) -> str:
    lines = [
        "| Mode | Concurrency | Server | req/s | vs floor | p50 ms | p99 ms | TTFT p50 ms"
        " | tokens/s | server CPU | server CPU per request | client CPU |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in cells:
        floor = cell.runs.get(FLOOR.key)
        for target in targets:
            run = cell.runs[target.key]
            ratio = "—" if floor is None or target is FLOOR else f"{run.rps / floor.rps:.2f}x"
            client = percent(run.client_cpu) + (" *" if run.client_cpu > run.server_cpu else "")
            noisy = " †" if run.other_cpu > NOISY else ""
            cells_text = (
                "streamed" if cell.stream else "non-streamed",
                str(cell.concurrency),
                target.label + noisy,
                f"{run.rps:,.0f}",
                ratio,
                millis(run.p50_ms),
                millis(run.p99_ms),
                millis(run.ttft_p50_ms),
                "—" if run.tokens_per_s is None else f"{run.tokens_per_s:,.0f}",
                percent(run.server_cpu),
                micros(run.server_cpu_per_request_us),
                client,
            )
            lines.append("| " + " | ".join(cells_text) + " |")
    return "\n".join(lines)


SPIN = """
import os, sys, time
if len(sys.argv) > 1 and sys.argv[1]:
    os.sched_setaffinity(0, {int(sys.argv[1])})
wall, cpu = time.perf_counter(), time.process_time()
while time.perf_counter() - wall < float(sys.argv[2] if len(sys.argv) > 2 else 1):
    pass
print((time.process_time() - cpu) / (time.perf_counter() - wall))
"""


def cpu_capacity(cpus: Sequence[int | None], seconds: float = 1.0) -> list[float]:
    """Busy loops, one per CPU at once: the fraction of wall time each really gets (a shared
    VM's two vCPUs may not give two whole cores)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SPIN, "" if cpu is None else str(cpu), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for cpu in cpus
    ]
    shares = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
            shares.append(float(out.strip() or "nan"))
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait()
            shares.append(float("nan"))
    return shares


@dataclass(frozen=True)
class Setup:
    cores: int
    pinning: str
    capacity: list[float]


def render_report(
    cells: Sequence[Cell],
    targets: Sequence[Target],
    sizes: Sizes,
    setup: Setup,
    noise: Noise,
    argv: Sequence[str],
) -> str:
    command = shlex.join(["python", "bench/gateway.py", *argv])
    runs = [run for cell in cells for run in cell.runs.values()]
    errors = sum(run.errors for run in runs)
    total = sum(run.requests for run in runs)
    capacity = " and ".join(percent(share) for share in setup.capacity)
    others = [run.other_cpu for run in runs]
    return "\n".join(
        [
            f"- Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- Machine: {setup.cores} cores, {cpu_model()}; {setup.pinning}; two busy loops"
            f" pinned the same way got {capacity} of a core each",
            f"- Python {platform.python_version()} ({platform.python_implementation()}),"
            f" aiohttp {importlib.metadata.version('aiohttp')} (server and client),"
            " default asyncio event loop",
            f"- Command: `{command}`; code: {code_version()}",
            f"- Sizes: concurrency {', '.join(map(str, CONCURRENCIES))}; {TOKENS} tokens per"
            f" request; median of {sizes.repeats} runs of {sizes.duration_s:g} s, each after"
            f" {sizes.warmup_s:g} s of warmup, the servers alternating run by run",
            f"- Errors: {errors} of {total:,} measured requests",
            f"- Other processes: {noise.redone} runs they disturbed were redone after waiting"
            f" for a quiet machine ({noise.spent_s:.0f} s of a {noise.budget_s:g} s budget);"
            f" {noise.still_noisy} of the {noise.kept} runs kept were still disturbed. Other"
            f" processes used {percent(statistics.median(others))} of a core in the median row"
            f" and {percent(max(others))} in the worst (`/proc/stat` busy time less the"
            " client's and the server's; the most of any run of a row)",
            "",
            render_table(cells, targets),
            "",
            "\\* the client used more CPU than the server: the load generator's share of the"
            " machine, not the server, is what limits that row.",
            f"† other processes used more than {percent(NOISY)} of a core during one of the"
            " row's runs.",
        ]
    )


def pick_cpus() -> tuple[int | None, int | None, str]:
    """(client CPU, server CPU, a description); no pinning on one core."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None, "not pinned"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, "not pinned (one core)"
    client, server = cpus[0], cpus[1]
    return client, server, f"client pinned to CPU {client}, every server to CPU {server}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per measurement (median reported)")
    parser.add_argument("--duration", type=float, help="seconds of one measured window")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table into PATH")
    parser.add_argument(
        "--noise-budget",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to spend redoing runs disturbed by other processes (default 60)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--only-gateway", action="store_true", help="skip the floor and the 2-replica gateway"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="cProfile the gateways into DIR/*.prof"
    )
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    if args.floor_server is not None:
        asyncio.run(_floor_main(args.floor_server, FLOOR_LIFETIME_S))
        return 0

    sizes = Sizes(duration_s=1.5)
    sizes = sizes.quick() if args.quick else sizes
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats)
    if args.duration is not None:
        sizes = replace(sizes, duration_s=args.duration)
    targets = TARGETS[1:2] if args.only_gateway else TARGETS
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()

    cores = core_count()
    client_cpu, server_cpu, pinning = (None, None, "not pinned") if args.no_pin else pick_cpus()
    setup = Setup(cores or 1, pinning, cpu_capacity([client_cpu, server_cpu]))
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})

    exit_on_signals()
    noise = Noise(args.noise_budget)
    started = time.perf_counter()
    try:
        with servers_running(targets, server_cpu, args.profile) as servers:
            cells = asyncio.run(measure(servers, sizes, noise))
    except asyncio.CancelledError:
        log("stopped by a signal; the servers are stopped")
        return 128 + signal.SIGTERM
    log(f"done in {time.perf_counter() - started:.1f} s")

    report = render_report(cells, targets, sizes, setup, noise, argv)
    print(report)
    if args.markdown is not None:
        write_section(args.markdown, report, BEGIN_MARKER, END_MARKER)
        log(f"wrote the table into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
