"""Benchmark of proxying an OpenAI-compatible upstream: our gateway with a remote engine core
(``runtime: openai``) against the upstream itself, a bare aiohttp proxy and LiteLLM's proxy.

Run ``python bench/proxy.py`` (``--quick`` for a smoke test). It starts, each in its own process
and bound to 127.0.0.1 only:

1. the upstream: ``MockUpstream`` (``python bench/proxy.py --mock-server PORT``), 64 words per
   reply at zero latency, requests not recorded;
2. *floor proxy*: ``python bench/proxy.py --floor-proxy PORT UPSTREAM``, an aiohttp server that
   forwards ``POST /v1/chat/completions`` to the mock with one shared ``ClientSession`` and sends
   the upstream's bytes back unchanged (no parsing, no features): what any Python proxy costs;
3. *gateway*: ``inference-runtime serve`` (``python -m inference_runtime.cli.main serve``) with
   one ``runtime: openai`` deployment whose ``base_url`` is the mock;
4. *LiteLLM*: ``litellm --config <tmp>.yaml`` with the mock as an ``openai/`` model, from its own
   virtual environment (``--litellm-venv``, default ``.venv-litellm`` at the repository root,
   ignored by git), created and filled with ``pip install 'litellm[proxy]'`` the first time.

Then, from this process, closed-loop loads of ``concurrency`` workers (1, 16, 64, 256) sending
``POST /v1/chat/completions`` (``max_tokens`` 64) back to back through one aiohttp
``ClientSession``, non-streamed and streamed (read to ``data: [DONE]``), against each target in
turn (the mock directly, then each proxy in front of it), the targets alternating run by run.
Each run is a warmup and a measured window; each figure is the median of ``--repeats`` runs. A
run that other processes disturbed (``/proc/stat``) is redone after waiting for a quiet machine,
within ``--noise-budget`` seconds. The client is pinned to one CPU, every proxy to another; the
mock shares the proxies' CPU (``--mock-cpu server``, the default) or the client's.

Added latency is a proxy's p50 (p99) at concurrency 1 less the mock's own. It prints a summary
with the issue's targets (added p50 <= 1 ms; the gateway's req/s and streams/s >= 70 % of the
floor proxy's) and the full table; ``--markdown PATH`` also writes both into PATH, between
``<!-- bench/proxy.py:begin -->`` and ``<!-- bench/proxy.py:end -->``. ``--profile DIR`` samples
the gateway with py-spy under one extra load per mode and leaves the stacks in DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from harness import (
    ROOT,
    busy_seconds,
    cancel_on_signals,
    code_version,
    core_count,
    cpu_model,
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
    verdict,
    wait_quiet,
    write_section,
)
from harness import Windows as Sizes
from inference_runtime.event_loop import LOOP_CHOICES, loop_factory
from inference_runtime.event_loop import run as run_event_loop

BEGIN_MARKER = "<!-- bench/proxy.py:begin -->"
END_MARKER = "<!-- bench/proxy.py:end -->"

MODEL = "mock-model"
"""The model every target is asked for: the mock's, the gateway's deployment, LiteLLM's alias."""
TOKENS = 64
"""Completion tokens per request (``max_tokens``; the mock answers that many words)."""
LATENCY_CONCURRENCY = 1
LOAD_CONCURRENCIES = (16, 64, 256)
CONCURRENCIES = (LATENCY_CONCURRENCY, *LOAD_CONCURRENCIES)
PROMPT = [{"role": "user", "content": "Say something"}]
CLIENT_KEY = "sk-bench-" + secrets.token_hex(24)
"""What the client sends as its bearer token: LiteLLM's master key (it refuses to start without
a strong one); the gateway does not check it, the floor proxy passes it to the mock, which
accepts any."""
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
DONE = b"data: [DONE]\n\n"
KEY_ENV = "BENCH_PROXY_UPSTREAM_KEY"
"""The gateway and LiteLLM read the upstream key from here (the mock accepts any)."""
USAGE_OK = re.compile(rb'"completion_tokens":\s*%d\b' % TOKENS)

ADDED_P50_TARGET_MS = 1.0
THROUGHPUT_TARGET = 0.7
"""The gateway's req/s and streams/s, as a share of the floor proxy's."""

REQUEST_TIMEOUT_S = 60.0
"""No request of the load may take longer (then it counts as an error)."""
READY_TIMEOUT_S = 60.0
"""A server that does not answer its readiness probe within this long fails the run."""
STOP_TIMEOUT_S = 10.0
"""After SIGTERM a server gets this long to exit, then SIGKILL."""
SERVER_LIFETIME_S = 1800.0
"""The mock and the floor proxy exit by themselves after this long, whatever happens to us."""
INSTALL_TIMEOUT_S = 600.0
"""Creating LiteLLM's virtual environment may take this long; then LiteLLM is not measured."""
NOISY = 0.1
"""A run where other processes used more than this fraction of a core is redone."""
MAX_REDOS = 3


@dataclass(frozen=True)
class Target:
    key: str
    label: str


DIRECT = Target("direct", "mock direct")
FLOOR = Target("floor", "floor proxy (bare aiohttp)")
GATEWAY = Target("gateway", "inference-runtime gateway")
LITELLM = Target("litellm", "LiteLLM proxy")
TARGETS = (DIRECT, FLOOR, GATEWAY, LITELLM)


# -- the mock upstream and the floor proxy (run in child processes) --------------------------


async def _mock_main(port: int, lifetime: float) -> None:
    from inference_runtime.testing.mock_upstream import MockUpstream

    mock = MockUpstream(
        port=port, models=(MODEL,), record_requests=False, tokens_per_response=TOKENS
    )
    async with mock:
        await serve_until_stopped(lifetime)


async def _floor_proxy_main(port: int, upstream: str, lifetime: float) -> None:
    """Forward the chat completion to ``upstream`` and its reply back, bytes unchanged."""
    url = upstream.rstrip("/") + "/chat/completions"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        auto_decompress=False,
    )
    passed = ("Content-Type", "Authorization")

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: request.headers[name] for name in passed if name in request.headers}
        async with session.post(url, data=body, headers=headers) as reply:
            content_type = reply.headers.get("Content-Type", "application/json")
            if reply.content_length is not None:  # a whole body: one read, one write
                data = await reply.read()
                return web.Response(
                    body=data,
                    status=reply.status,
                    content_type=None,
                    headers={"Content-Type": content_type},
                )
            response = web.StreamResponse(
                status=reply.status, headers={"Content-Type": content_type}
            )
            await response.prepare(request)
            async for chunk in reply.content.iter_any():
                await response.write(chunk)
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
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        await serve_until_stopped(lifetime)
    finally:
        await runner.cleanup()
        await session.close()


# -- LiteLLM's virtual environment ----------------------------------------------------------


def ensure_litellm(venv: Path, timeout: float = INSTALL_TIMEOUT_S) -> tuple[Path | None, str]:
    """(the ``litellm`` command, its version) or (None, why not), creating ``venv`` and
    ``pip install 'litellm[proxy]'`` into it when LiteLLM's proxy is not there yet."""
    python, command = venv / "bin" / "python", venv / "bin" / "litellm"
    probe = [str(python), "-c", "import litellm.proxy.proxy_server"]

    def installed() -> bool:
        if not command.exists():
            return False
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0
        return False

    def version() -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.stdout.strip() or "unknown"
        return "unknown"

    if installed():
        return command, version()
    log(f"installing LiteLLM's proxy into {venv} (once; at most {timeout:g} s)")
    deadline = time.monotonic() + timeout
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "litellm[proxy]"],
    ]
    for step in steps:
        left = deadline - time.monotonic()
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=max(1.0, left), check=False
            )
        except subprocess.TimeoutExpired:
            return None, f"`{shlex.join(step[-3:])}` took over {timeout:g} s"
        except OSError as error:
            return None, f"`{shlex.join(step[-3:])}` failed: {error}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"`{shlex.join(step[-3:])}` exited with {done.returncode}: {tail[0]}"
    if not installed():
        return None, "installed, but `import litellm.proxy.proxy_server` fails"
    return command, version()


# -- server processes -----------------------------------------------------------------------


def _child_setup(cpu: int | None) -> Callable[[], None] | None:
    """In the child, before exec: pin it (every thread it starts inherits the pinning) and
    have it get SIGTERM when the benchmark dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None

    def setup() -> None:
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {cpu})
        die_with_parent()

    return setup


def gateway_config(port: int, upstream: str) -> dict[str, Any]:
    return {
        "gateway": {"host": "127.0.0.1", "port": port, "drain_timeout_s": 5},
        "deployments": [
            {
                "name": MODEL,
                "runtime": "openai",
                "runtime_config": {
                    "base_url": upstream,
                    "api_key_env": KEY_ENV,
                    "model": MODEL,
                    "max_concurrent": 512,
                },
                "serving": {"max_concurrent": 512, "queue_capacity": 2048},
            }
        ],
    }


def litellm_config(upstream: str) -> str:
    """LiteLLM's proxy config (YAML): the mock as an OpenAI-compatible model, nothing else."""
    return "\n".join(
        [
            "model_list:",
            f"  - model_name: {MODEL}",
            "    litellm_params:",
            f"      model: openai/{MODEL}",
            f"      api_base: {upstream}",
            f"      api_key: os.environ/{KEY_ENV}",
            "litellm_settings:",
            "  drop_params: true",
            "  telemetry: false",
            "",
        ]
    )


@dataclass
class Server:
    name: str
    label: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.label} exited with {code} before it was ready:\n" + self.log_tail()
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                opener.open(self.url + self.ready_path, timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.label}: {self.ready_path} not 200 within {timeout:g} s:\n"
                    + self.log_tail()
                )
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.process, self.label, STOP_TIMEOUT_S)
        for pid in descendants(self.process.pid):  # e.g. a worker LiteLLM's server forked
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def start_server(
    name: str,
    label: str,
    command: list[str],
    port: int,
    ready_path: str,
    workdir: Path,
    cpu: int | None,
    env: dict[str, str],
) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            preexec_fn=_child_setup(cpu),
        )
    return Server(name, label, port, process, log_path, ready_path)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from ``/proc``; empty where unknown)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _proc_stat(int(entry.name))
                if fields is not None:
                    children[int(fields[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes so far (Linux ``/proc``; 0 where unknown)."""
    total = 0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """The running servers: the mock and every proxy, by target key."""

    mock: Server
    proxies: dict[str, Server]
    litellm_version: str | None
    litellm_missing: str | None
    """Why LiteLLM is not measured (None when it is)."""

    def target_server(self, target: Target) -> Server:
        return self.mock if target is DIRECT else self.proxies[target.key]

    def all(self) -> list[Server]:
        return [self.mock, *self.proxies.values()]


@contextlib.contextmanager
def fleet_running(
    targets: Sequence[Target],
    server_cpu: int | None,
    mock_cpu: int | None,
    litellm: tuple[Path | None, str],
    event_loop: str = "asyncio",
) -> Iterator[Fleet]:
    script = str(Path(__file__).resolve())
    env = {
        **os.environ,
        KEY_ENV: "sk-bench",
        "INFERENCE_RUNTIME_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # LiteLLM: no fetch of its price list over the network, no telemetry, quiet logs
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_MASTER_KEY": CLIENT_KEY,
        "INFERENCE_RUNTIME_EVENT_LOOP": event_loop,
    }
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(variable, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    litellm_command, litellm_about = litellm
    with (
        tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        port = free_port()
        mock = start_server(
            "mock",
            "mock upstream",
            [sys.executable, script, "--mock-server", str(port)],
            port,
            "/v1/models",
            workdir,
            mock_cpu,
            env,
        )
        stack.callback(mock.stop)
        upstream = f"{mock.url}/v1"
        proxies: dict[str, Server] = {}
        for target in targets:
            port = free_port()
            if target is FLOOR:
                command = [sys.executable, script, "--floor-proxy", str(port), upstream, event_loop]
                ready = "/readyz"
            elif target is GATEWAY:
                config = workdir / "gateway.yaml"
                config.write_text(json.dumps(gateway_config(port, upstream)))  # JSON is YAML
                command = [sys.executable, "-m", "inference_runtime.cli.main", "serve"]
                command += ["--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
                ready = "/readyz"
            elif target is LITELLM and litellm_command is not None:
                config = workdir / "litellm.yaml"
                config.write_text(litellm_config(upstream))
                command = [str(litellm_command), "--config", str(config)]
                command += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
                ready = "/health/liveliness"
            else:
                continue
            server = start_server(
                target.key, target.label, command, port, ready, workdir, server_cpu, env
            )
            stack.callback(server.stop)
            proxies[target.key] = server
        missing = None if litellm_command is not None else litellm_about
        for server in [mock, *proxies.values()]:
            try:
                server.wait_ready()
            except (RuntimeError, TimeoutError) as error:
                if server.name != LITELLM.key:
                    raise
                log(str(error))  # LiteLLM not starting is a finding, not a failed benchmark
                server.stop()
                del proxies[server.name]
                last = server.log_tail(400).strip().splitlines()[-1:] or ["no output"]
                missing = f"its proxy did not start ({last[0]})"
                continue
            log(f"{server.label}: pid {server.process.pid}, port {server.port}")
        yield Fleet(mock, proxies, None if missing else litellm_about, missing)


# -- the load -------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured window against one target."""

    requests: int
    """Requests started in the window (all of them were waited for)."""
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    target_cpu: float
    """Fraction of one core the target used in the window (the mock itself for ``direct``)."""
    target_cpu_per_request_us: float
    mock_cpu: float
    client_cpu: float
    other_cpu: float
    """CPU the rest of the machine used in the window (other processes), in cores."""


@dataclass(frozen=True, slots=True)
class Sample:
    start: float
    end: float
    first: float | None
    """When the first bytes of the body arrived (streams)."""
    ok: bool


async def run_load(
    fleet: Fleet,
    target: Target,
    *,
    stream: bool,
    concurrency: int,
    warmup: float,
    duration: float,
) -> Run:
    """``concurrency`` workers send requests back to back: a warmup, then the window.

    Throughput counts every request by the fraction of its lifetime inside the window (a slow
    proxy's streams can last longer than the window). Latencies are those of the requests
    started inside it; the workers keep the load on until the last of them has ended.
    """
    server = fleet.target_server(target)
    url = server.url + "/v1/chat/completions"
    body = msgspec.json.encode(
        {"model": MODEL, "messages": PROMPT, "max_tokens": TOKENS, "stream": stream}
    )
    target_pids = [server.process.pid, *descendants(server.process.pid)]
    mock_pids = [fleet.mock.process.pid]
    all_pids = [pid for s in fleet.all() for pid in (s.process.pid, *descendants(s.process.pid))]
    clock = time.perf_counter
    window_start = clock() + warmup
    window_end = window_start + duration
    samples: list[Sample] = []
    pending = 0
    """Requests started in the window and not ended yet."""
    cpu: dict[str, float] = {}

    def sample_cpu(key: str) -> None:
        cpu["t" + key] = clock()
        cpu["target" + key] = cpu_seconds(target_pids)
        cpu["mock" + key] = cpu_seconds(mock_pids)
        cpu["servers" + key] = cpu_seconds(all_pids)
        cpu["client" + key] = time.process_time()
        cpu["machine" + key] = busy_seconds()

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
            try:
                async with post(url, data=body, headers=HEADERS) as response:
                    if stream:
                        buffer = bytearray()
                        async for chunk in response.content.iter_any():
                            if first is None:
                                first = clock()
                            buffer += chunk
                        ok = (
                            response.status == 200
                            and buffer.endswith(DONE)
                            and buffer.count(b"data: ") > TOKENS  # a frame a token, [DONE]
                        )
                    else:
                        data = await response.read()
                        ok = response.status == 200 and USAGE_OK.search(data) is not None
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            finally:
                pending -= measured
            end = clock()
            if end > window_start and start < window_end:
                samples.append(Sample(start, end, first, ok))
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
    for s in samples:
        if s.ok:
            inside = min(s.end, window_end) - max(s.start, window_start)
            done += inside / (s.end - s.start) if s.end > s.start else 1.0
    started = [s for s in samples if window_start <= s.start < window_end]
    measured = [s for s in started if s.ok]
    p50, p99 = percentiles([s.end - s.start for s in measured])
    ttfts = [s.first - s.start for s in measured if s.first is not None]
    elapsed = cpu["t1"] - cpu["t0"]
    target_cpu = cpu["target1"] - cpu["target0"]
    servers_cpu = cpu["servers1"] - cpu["servers0"]
    client_cpu = cpu["client1"] - cpu["client0"]
    other_cpu = max(0.0, cpu["machine1"] - cpu["machine0"] - servers_cpu - client_cpu)
    return Run(
        requests=len(started),
        errors=len(started) - len(measured),
        rps=done / duration,
        p50_ms=p50,
        p99_ms=p99,
        ttft_p50_ms=percentiles(ttfts)[0] if stream else None,
        target_cpu=target_cpu / elapsed,
        target_cpu_per_request_us=target_cpu / done * 1e6 if done else float("nan"),
        mock_cpu=(cpu["mock1"] - cpu["mock0"]) / elapsed,
        client_cpu=client_cpu / elapsed,
        other_cpu=other_cpu / elapsed,
    )


def median_run(runs: Sequence[Run]) -> Run:
    ttfts = [r.ttft_p50_ms for r in runs if r.ttft_p50_ms is not None]
    return Run(
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        rps=statistics.median(r.rps for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        ttft_p50_ms=statistics.median(ttfts) if ttfts else None,
        target_cpu=statistics.median(r.target_cpu for r in runs),
        target_cpu_per_request_us=statistics.median(r.target_cpu_per_request_us for r in runs),
        mock_cpu=statistics.median(r.mock_cpu for r in runs),
        client_cpu=statistics.median(r.client_cpu for r in runs),
        other_cpu=max(r.other_cpu for r in runs),
    )


@dataclass
class Cell:
    stream: bool
    concurrency: int
    runs: dict[str, Run] = field(default_factory=dict)
    """Target key -> the median run."""


async def wait_quiet_start(limit: float, quiet_for: float = 3.0) -> tuple[float, bool]:
    """Before measuring: wait (at most ``limit`` seconds) until other processes have used under
    ``NOISY`` of a core for ``quiet_for`` seconds in a row. (seconds waited, quiet or not)"""
    clock = time.perf_counter
    began = clock()
    while True:
        before, t0 = busy_seconds(), clock()
        await asyncio.sleep(quiet_for)
        if (busy_seconds() - before) / (clock() - t0) < NOISY:
            return clock() - began, True
        if clock() - began > limit:
            return clock() - began, False


@dataclass
class Noise:
    """Runs disturbed by other processes are redone, within a budget of seconds."""

    budget_s: float
    start_wait_s: float = 0.0
    quiet_at_start: bool = True
    spent_s: float = 0.0
    redone: int = 0
    kept: int = 0
    still_noisy: int = 0

    @property
    def left_s(self) -> float:
        return self.budget_s - self.spent_s


async def run_all(
    fleet: Fleet, targets: Sequence[Target], sizes: Sizes, noise: Noise
) -> list[Cell]:
    clock = time.perf_counter
    cells = []
    targets = [t for t in targets if t is DIRECT or t.key in fleet.proxies]
    for stream in (False, True):
        for concurrency in CONCURRENCIES:
            mode = "streamed" if stream else "non-streamed"
            log(f"{mode}, concurrency {concurrency}: {sizes.repeats} x {sizes.duration_s:g} s")
            runs: dict[str, list[Run]] = {t.key: [] for t in targets}
            for _ in range(sizes.repeats):
                for target in targets:
                    for attempt in range(1 + MAX_REDOS):
                        if attempt:
                            started = clock()
                            await wait_quiet(min(noise.left_s, 10.0), NOISY)
                        run = await run_load(
                            fleet,
                            target,
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
                    runs[target.key].append(run)
            cells.append(
                Cell(stream, concurrency, {key: median_run(rs) for key, rs in runs.items()})
            )
    return cells


# -- profiling the gateway ------------------------------------------------------------------


def _frame_name(frame: str) -> str:
    """``handle (inference_runtime/gateway/server.py:123)`` -> ``gateway/server.py:handle``."""
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if match is None:
        return frame
    function, path = match.groups()
    for anchor in ("inference_runtime/", "site-packages/", "lib/python3"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{path}:{function}"


def summarize_stacks(path: Path, top: int = 25) -> str:
    """Self and inclusive shares of the functions in py-spy's ``--format raw`` output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive (inference_runtime and aiohttp):"]
    ours = [
        (name, n)
        for name, n in inclusive.most_common()
        if not name.startswith(("asyncio/", "threading", "<", "cli/main.py", "selectors.py"))
    ]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours[: top * 2]]
    return "\n".join(lines)


async def profile_gateway(fleet: Fleet, out: Path, seconds: float) -> None:
    """py-spy on the gateway during one load of 64 workers per mode (not counted)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        log("--profile: py-spy not found (pip install py-spy); no profile taken")
        return
    pid = fleet.proxies[GATEWAY.key].process.pid
    for stream in (False, True):
        name = "streamed" if stream else "non-streamed"
        raw = out / f"gateway-{name}.txt"
        command = [spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
        command += ["--duration", str(max(1, round(seconds))), "--format", "raw"]
        command += ["--output", str(raw)]
        spy_process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            await run_load(
                fleet, GATEWAY, stream=stream, concurrency=64, warmup=0.5, duration=seconds + 1
            )
            _, errors = await asyncio.wait_for(spy_process.communicate(), 30)
        finally:
            if spy_process.returncode is None:
                spy_process.kill()
                await spy_process.wait()
        if spy_process.returncode != 0 or not raw.exists():
            log(f"py-spy failed ({spy_process.returncode}): {errors.decode()[-500:]}")
            continue
        summary = summarize_stacks(raw)
        (out / f"gateway-{name}-summary.txt").write_text(summary + "\n")
        log(f"profile of the gateway, {name}, 64 workers: {raw}\n{summary}")


# -- the report -----------------------------------------------------------------------------


def added(value: float | None, base: float | None) -> str:
    if value is None or base is None or value != value or base != base:
        return "—"
    return ("+" if value >= base else "-") + millis(abs(value - base)) + " ms"


@dataclass(frozen=True)
class Verdicts:
    lines: list[str]
    passed: int
    total: int


def _cell(cells: Sequence[Cell], stream: bool, concurrency: int) -> Cell:
    return next(c for c in cells if c.stream == stream and c.concurrency == concurrency)


def best(cells: Sequence[Cell], stream: bool, key: str) -> tuple[float, int] | None:
    """The highest req/s of a target over the load concurrencies, and where."""
    found = [
        (c.runs[key].rps, c.concurrency)
        for c in cells
        if c.stream == stream and c.concurrency in LOAD_CONCURRENCIES and key in c.runs
    ]
    return max(found) if found else None


def render_summary(
    cells: Sequence[Cell], targets: Sequence[Target], fleet: Fleet
) -> tuple[str, Verdicts]:
    present = [t for t in TARGETS if t in targets]
    header = "| Measure | " + " | ".join(t.label for t in present)
    header += " | gateway / floor | gateway / LiteLLM | Target |"
    lines = [header, "|---|" + "--:|" * len(present) + "--:|--:|---|"]
    outcomes: list[bool] = []

    def ratio(a: float | None, b: float | None) -> str:
        return "—" if a is None or b is None or not b else f"{a / b:.2f}x"

    for stream in (False, True):
        mode = "streamed" if stream else "non-streamed"
        cell = _cell(cells, stream, LATENCY_CONCURRENCY)
        base = cell.runs.get(DIRECT.key)
        for what in ("p50", "p99", "TTFT p50") if stream else ("p50", "p99"):

            def value(run: Run | None, what: str = what) -> float | None:
                if run is None:
                    return None
                if what == "TTFT p50":
                    return run.ttft_p50_ms
                return run.p50_ms if what == "p50" else run.p99_ms

            row = [f"added latency {what}, {mode}, concurrency 1"]
            for target in present:
                run = cell.runs.get(target.key)
                if target is DIRECT:
                    row.append(f"{millis(value(run))} ms (itself)")
                elif run is None:
                    row.append("not measured")
                else:
                    row.append(added(value(run), value(base)))
            b = value(base)
            gw, fl, lt = (value(cell.runs.get(t.key)) for t in (GATEWAY, FLOOR, LITELLM))
            gw_added = None if gw is None or b is None else gw - b
            extra = [
                ratio(gw_added, None if fl is None or b is None else fl - b),
                ratio(gw_added, None if lt is None or b is None else lt - b),
            ]
            row += ["—", "—"] if what != "p50" else extra
            if what == "p50" and gw_added is not None:
                ok = gw_added <= ADDED_P50_TARGET_MS
                outcomes.append(ok)
                row.append(f"≤ {ADDED_P50_TARGET_MS:g} ms: {verdict(ok)}")
            else:
                row.append("(info)")
            lines.append("| " + " | ".join(row) + " |")
    for stream in (False, True):
        what = "streams/s (64 tokens)" if stream else "req/s (64 tokens, not streamed)"
        row = [f"max {what}, concurrency {'/'.join(map(str, LOAD_CONCURRENCIES))}"]
        for target in present:
            top = best(cells, stream, target.key)
            row.append("not measured" if top is None else f"{top[0]:,.0f} (at {top[1]})")
        g_top, f_top, l_top = (best(cells, stream, t.key) for t in (GATEWAY, FLOOR, LITELLM))
        g_rps, f_rps = (None if t is None else t[0] for t in (g_top, f_top))
        row.append(ratio(g_rps, f_rps))
        row.append(ratio(g_rps, None if l_top is None else l_top[0]))
        if g_rps is not None and f_rps is not None:
            ok = g_rps >= THROUGHPUT_TARGET * f_rps
            outcomes.append(ok)
            row.append(f"≥ {THROUGHPUT_TARGET:.2f}x floor: {verdict(ok)}")
        else:
            row.append("—")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"Targets: {sum(outcomes)} of {len(outcomes)} pass.")
    if fleet.litellm_missing is not None:
        lines.append(f"LiteLLM: not measured: {fleet.litellm_missing}.")
    return "\n".join(lines), Verdicts(lines, sum(outcomes), len(outcomes))


def render_table(cells: Sequence[Cell], targets: Sequence[Target], fleet: Fleet) -> str:
    lines = [
        "| Mode | Concurrency | Target | req/s | vs floor | p50 ms | p99 ms | TTFT p50 ms"
        " | target CPU | target CPU per request | mock CPU | client CPU |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for cell in cells:
        floor = cell.runs.get(FLOOR.key)
        mode = "streamed" if cell.stream else "non-streamed"
        for target in targets:
            run = cell.runs.get(target.key)
            if run is None:
                why = fleet.litellm_missing or "not run"
                lines.append(
                    f"| {mode} | {cell.concurrency} | {target.label} | not measured:"
                    f" {why} |" + " |" * 8
                )
                continue
            ratio = (
                "—" if floor is None or target in (FLOOR, DIRECT) else f"{run.rps / floor.rps:.2f}x"
            )
            text = (
                mode,
                str(cell.concurrency),
                target.label + (" †" if run.other_cpu > NOISY else ""),
                f"{run.rps:,.0f}" + (f" ({run.errors} errors)" if run.errors else ""),
                ratio,
                millis(run.p50_ms),
                millis(run.p99_ms),
                millis(run.ttft_p50_ms),
                percent(run.target_cpu),
                micros(run.target_cpu_per_request_us),
                "—" if target is DIRECT else percent(run.mock_cpu),
                percent(run.client_cpu) + (" *" if run.client_cpu > 0.9 else ""),
            )
            lines.append("| " + " | ".join(text) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Setup:
    cores: int
    pinning: str
    argv: list[str]
    event_loop: str
    """The loop of the gateway and of the floor proxy (the same for both)."""


def render_report(
    cells: Sequence[Cell],
    targets: Sequence[Target],
    sizes: Sizes,
    setup: Setup,
    noise: Noise,
    fleet: Fleet,
) -> tuple[str, Verdicts]:
    command = shlex.join(["python", "bench/proxy.py", *setup.argv])
    runs = [run for cell in cells for run in cell.runs.values()]
    errors = sum(run.errors for run in runs)
    total = sum(run.requests for run in runs)
    others = [run.other_cpu for run in runs]
    litellm = (
        f"LiteLLM {fleet.litellm_version} (`litellm[proxy]` in its own venv, one worker)"
        if fleet.litellm_version is not None
        else f"LiteLLM not measured: {fleet.litellm_missing}"
    )
    summary, verdicts = render_summary(cells, targets, fleet)
    report = "\n".join(
        [
            f"- Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- Machine: {setup.cores} cores, {cpu_model()}; {setup.pinning}",
            f"- Python {platform.python_version()}, aiohttp"
            f" {importlib.metadata.version('aiohttp')} (load client, mock, floor proxy, the"
            " gateway's server); the gateway's upstream client: our own (remote/http_client.py,"
            f" httptools {importlib.metadata.version('httptools')});"
            f" {litellm}",
            f"- Event loop: {setup.event_loop} for the gateway and the floor proxy alike (the"
            " floor runs on the loop the gateway runs on); the mock on asyncio's",
            f"- Command: `{command}`; code: {code_version()}",
            f"- Sizes: concurrency {', '.join(map(str, CONCURRENCIES))}; {TOKENS} tokens per"
            f" request; median of {sizes.repeats} runs of {sizes.duration_s:g} s, each after"
            f" {sizes.warmup_s:g} s of warmup, the targets alternating run by run",
            f"- Errors: {errors} of {total:,} measured requests",
            f"- Other processes: measuring began after waiting {noise.start_wait_s:.0f} s for a"
            f" quiet machine ({'quiet' if noise.quiet_at_start else 'still busy: gave up'});"
            f" {noise.redone} disturbed runs redone"
            f" ({noise.spent_s:.0f} s of a {noise.budget_s:g} s budget); {noise.still_noisy} of"
            f" the {noise.kept} runs kept were still disturbed; other processes used"
            f" {percent(statistics.median(others))} of a core in the median row and"
            f" {percent(max(others))} in the worst",
            "",
            summary,
            "",
            render_table(cells, targets, fleet),
            "",
            "*target CPU*: the server measured (the mock itself for *mock direct*), as a share of"
            " one core and per request; *mock CPU*: the mock behind a proxy. \\* the client used"
            " over 90 % of its core: the load generator is near its limit in that row."
            f" † other processes used more than {percent(NOISY)} of a core in one of its runs.",
        ]
    )
    return report, verdicts


# -- main -----------------------------------------------------------------------------------


def pick_cpus(mock_on: str) -> tuple[int | None, int | None, int | None, str]:
    """(client CPU, proxies' CPU, mock's CPU, a description); no pinning on one core."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None, None, "not pinned"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, None, "not pinned (one core)"
    client, server = cpus[0], cpus[1]
    mock = server if mock_on == "server" else client
    where = "the proxies'" if mock_on == "server" else "the client's"
    return (
        client,
        server,
        mock,
        f"client pinned to CPU {client}, every proxy to CPU {server}, the mock to CPU {mock}"
        f" ({where})",
    )


async def measure(
    fleet: Fleet,
    targets: Sequence[Target],
    sizes: Sizes,
    noise: Noise,
    profile: tuple[Path, float] | None,
    quiet_wait: float,
) -> list[Cell]:
    """``run_all`` (then the profile), cancelled cleanly by SIGTERM or SIGHUP."""
    cancel_on_signals()
    if quiet_wait > 0:
        log(f"waiting for a quiet machine (at most {quiet_wait:g} s)")
        noise.start_wait_s, noise.quiet_at_start = await wait_quiet_start(quiet_wait)
    cells = await run_all(fleet, targets, sizes, noise)
    if profile is not None and GATEWAY in targets:
        await profile_gateway(fleet, *profile)
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per measurement (median reported)")
    parser.add_argument("--duration", type=float, help="seconds of one measured window")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the report into PATH")
    parser.add_argument(
        "--noise-budget",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to spend redoing runs disturbed by other processes (default 60)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        metavar="S",
        help="before measuring, wait at most this long for other processes to go quiet",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--mock-cpu",
        choices=("server", "client"),
        default="server",
        help="the CPU the mock is pinned to: the proxies' (default) or the client's",
    )
    parser.add_argument("--no-litellm", action="store_true", help="do not measure LiteLLM")
    parser.add_argument(
        "--event-loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="the loop of the gateway and of the floor proxy, the same for both "
        "(default auto: uvloop when installed, as the gateway takes by default)",
    )
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=ROOT / ".venv-litellm",
        metavar="DIR",
        help="LiteLLM's virtual environment, created when missing (default .venv-litellm)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the gateway under load into DIR"
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=8.0, metavar="S", help="per mode (default 8)"
    )
    parser.add_argument("--mock-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--floor-proxy", nargs=3, metavar=("PORT", "UPSTREAM", "LOOP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    if args.mock_server is not None:
        asyncio.run(_mock_main(args.mock_server, SERVER_LIFETIME_S))
        return 0
    if args.floor_proxy is not None:
        port, upstream, loop = args.floor_proxy
        run_event_loop(_floor_proxy_main(int(port), upstream, SERVER_LIFETIME_S), choice=loop)
        return 0

    sizes = Sizes(duration_s=2.0)
    sizes = sizes.quick() if args.quick else sizes
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats)
    if args.duration is not None:
        sizes = replace(sizes, duration_s=args.duration)
    profile = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile = (args.profile.resolve(), args.profile_seconds)

    targets = [t for t in TARGETS if not (t is LITELLM and args.no_litellm)]
    litellm: tuple[Path | None, str] = (None, "skipped (`--no-litellm`)")
    if not args.no_litellm:
        litellm = ensure_litellm(args.litellm_venv.resolve())
        if litellm[0] is None:
            log(f"LiteLLM not measured: {litellm[1]}")

    cores = core_count()
    if args.no_pin:
        client_cpu = server_cpu = mock_cpu = None
        pinning = "not pinned"
    else:
        client_cpu, server_cpu, mock_cpu, pinning = pick_cpus(args.mock_cpu)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    event_loop, _ = loop_factory(args.event_loop)
    setup = Setup(cores or 1, pinning, argv, event_loop)

    exit_on_signals()
    noise = Noise(args.noise_budget)
    started = time.perf_counter()
    try:
        with fleet_running(targets, server_cpu, mock_cpu, litellm, event_loop) as fleet:
            cells = asyncio.run(measure(fleet, targets, sizes, noise, profile, args.quiet_wait))
    except asyncio.CancelledError:
        log("stopped by a signal; the servers are stopped")
        return 128 + signal.SIGTERM
    log(f"done in {time.perf_counter() - started:.1f} s")

    report, verdicts = render_report(cells, targets, sizes, setup, noise, fleet)
    print(report)
    log(f"targets: {verdicts.passed} of {verdicts.total} pass")
    if args.markdown is not None:
        write_section(args.markdown, report, BEGIN_MARKER, END_MARKER)
        log(f"wrote the report into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
