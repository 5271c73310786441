"""Benchmark of the actor kernel against a bare asyncio floor and Pykka.

Run ``python bench/actors.py`` (``--quick`` for a smoke test). It measures, in one run:

1. tell throughput: one producer tells N messages to one counting actor; the clock stops when the
   actor has handled the N-th. Floors: an ``asyncio.Queue`` drained by one task, and Pykka.
2. ask round trip latency (p50, p99) over sequential asks. Floors: a future sent through an
   ``asyncio.Queue`` to a task that resolves it, and Pykka's ``ask``.
3. spawn + stop cost per actor, in a batch and one after another. Floors: a bare task that waits
   on a future, and Pykka's ``start()`` + ``stop()``.

Each figure is the median of ``--repeats`` runs after one warmup run; ours and the asyncio floor
alternate run by run, so that a noisy neighbour hits both alike. It prints one markdown table with
the ratios and the PASS/FAIL of each target; ``--markdown PATH`` also writes it into PATH, between
the markers ``<!-- bench/actors.py:begin -->`` and ``<!-- bench/actors.py:end -->`` (appended if
the markers are missing).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pykka

from harness import core_count, cpu_model, log, verdict, write_section
from inference_runtime.actors import Actor, ActorRef, ActorSystem, MailboxFull, Props

BEGIN_MARKER = "<!-- bench/actors.py:begin -->"
END_MARKER = "<!-- bench/actors.py:end -->"

BOUNDED_CAPACITY = 1024

T = TypeVar("T")

# Targets from the issue.
TELL_VS_QUEUE_MIN = 0.5
"""Our tell throughput is at least this fraction of the bare queue's."""
ASK_VS_FUTURE_MAX = 2.0
"""Our ask p50 is at most this multiple of the bare future round trip's p50."""
SPAWN_STOP_MAX_US = 50.0
"""Spawning and stopping one actor costs at most this many microseconds."""
VS_PYKKA_MIN = 5.0
"""Every figure of ours is at least this many times better than Pykka's."""


@dataclass(frozen=True)
class Sizes:
    tell: int = 200_000
    ask: int = 20_000
    spawn: int = 10_000
    spawn_sequential: int = 2_000
    pykka_tell: int = 50_000
    pykka_ask: int = 5_000
    pykka_spawn: int = 500
    repeats: int = 7
    pykka_repeats: int = 7

    def quick(self) -> Sizes:
        return replace(
            self,
            tell=20_000,
            ask=2_000,
            spawn=1_000,
            spawn_sequential=200,
            pykka_tell=5_000,
            pykka_ask=500,
            pykka_spawn=50,
            repeats=2,
            pykka_repeats=1,
        )


# -- measurement helpers ---------------------------------------------------------------------


@dataclass
class Latency:
    p50_us: float
    p99_us: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        return cls(p50_us=cuts[49] * 1e6, p99_us=cuts[98] * 1e6)

    @classmethod
    def median(cls, runs: Sequence[Latency]) -> Latency:
        return cls(
            p50_us=statistics.median(run.p50_us for run in runs),
            p99_us=statistics.median(run.p99_us for run in runs),
        )


async def alternate(
    cases: dict[str, Callable[[], Awaitable[T]]], repeats: int
) -> dict[str, list[T]]:
    """One warmup run of every case, then ``repeats`` rounds running each case once in turn."""
    for run in cases.values():
        gc.collect()
        await run()
    results: dict[str, list[T]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            gc.collect()
            results[name].append(await run())
    return results


def repeat_sync(run: Callable[[], T], repeats: int) -> list[T]:
    gc.collect()
    run()  # warmup
    results = []
    for _ in range(repeats):
        gc.collect()
        results.append(run())
    return results


# -- our actors ------------------------------------------------------------------------------


class CountingActor(Actor):
    """Counts messages and resolves ``done`` at the ``target``-th."""

    def __init__(self, target: int, done: asyncio.Future[None]) -> None:
        self.target = target
        self.done = done
        self.count = 0

    def receive(self, message: Any) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set_result(None)


class EchoActor(Actor):
    def receive(self, message: Any) -> Any:
        return message


class DirectEchoActor(EchoActor):
    direct_delivery = True  # answered on the asker's call when idle


class AsyncEchoActor(Actor):
    async def receive(self, message: Any) -> Any:
        return message


class Tally:
    """Counts actors started; ``all_started`` is set when ``expected`` have."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started = 0
        self.all_started = asyncio.Event()

    def add(self) -> None:
        self.started += 1
        if self.started == self.expected:
            self.all_started.set()


class IdleActor(Actor):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def pre_start(self) -> None:
        self.tally.add()

    def receive(self, message: Any) -> None:
        pass


async def settle(ref: ActorRef) -> None:
    """Let a fresh actor start and park on its empty mailbox."""
    await ref.ask(None)


# -- 1. tell throughput ----------------------------------------------------------------------


async def tell_ours(system: ActorSystem, n: int, capacity: int | None) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    # The warmup ask counts as one message, so the actor resolves ``done`` at n + 1.
    ref = system.actor_of(Props(lambda: CountingActor(n + 1, done), mailbox_capacity=capacity))
    await settle(ref)
    tell = ref.tell
    start = time.perf_counter()
    if capacity is None:
        for i in range(n):
            tell(i)
    else:
        i = 0
        while i < n:
            try:
                tell(i)
            except MailboxFull:
                await asyncio.sleep(0)
            else:
                i += 1
    await done
    elapsed = time.perf_counter() - start
    ref.stop()
    await ref.wait_stopped()
    return n / elapsed


async def _drain(queue: asyncio.Queue[int], n: int, done: asyncio.Future[None]) -> None:
    count = 0
    while True:
        await queue.get()
        count += 1
        if count == n:
            done.set_result(None)
            return


async def tell_queue(n: int, capacity: int | None) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=capacity or 0)
    consumer = asyncio.create_task(_drain(queue, n, done))
    await asyncio.sleep(0)  # the consumer parks on the empty queue
    start = time.perf_counter()
    if capacity is None:
        put_nowait = queue.put_nowait
        for i in range(n):
            put_nowait(i)
    else:
        put = queue.put
        for i in range(n):
            await put(i)
    await done
    elapsed = time.perf_counter() - start
    await consumer
    return n / elapsed


class PykkaCounter(pykka.ThreadingActor):
    def __init__(self, target: int, done: threading.Event) -> None:
        super().__init__()
        self.target = target
        self.done = done
        self.count = 0

    def on_receive(self, message: Any) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


def tell_pykka(n: int) -> float:
    done = threading.Event()
    ref = PykkaCounter.start(n + 1, done)
    ref.ask(None)  # started and idle; counts as one message
    tell = ref.tell
    start = time.perf_counter()
    for i in range(n):
        tell(i)
    done.wait()
    elapsed = time.perf_counter() - start
    ref.stop()
    return n / elapsed


# -- 2. ask round trip -----------------------------------------------------------------------


async def ask_ours(
    system: ActorSystem, n: int, factory: Callable[[], Actor], timeout: float | None = 30.0
) -> Latency:
    ref = system.actor_of(Props(factory))
    await settle(ref)
    ask = ref.ask
    clock = time.perf_counter
    samples = [0.0] * n
    for i in range(n):
        start = clock()
        await ask(i, timeout=timeout)
        samples[i] = clock() - start
    ref.stop()
    await ref.wait_stopped()
    return Latency.of(samples)


async def _resolve_forever(queue: asyncio.Queue[tuple[int, asyncio.Future[int]]]) -> None:
    while True:
        item, reply = await queue.get()
        reply.set_result(item)


async def ask_future(n: int) -> Latency:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()
    server = asyncio.create_task(_resolve_forever(queue))
    await asyncio.sleep(0)
    create_future, put_nowait = loop.create_future, queue.put_nowait
    clock = time.perf_counter
    samples = [0.0] * n
    for i in range(n):
        start = clock()
        reply: asyncio.Future[int] = create_future()
        put_nowait((i, reply))
        await reply
        samples[i] = clock() - start
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    return Latency.of(samples)


class PykkaEcho(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def ask_pykka(n: int) -> Latency:
    ref = PykkaEcho.start()
    ref.ask(None)
    ask = ref.ask
    clock = time.perf_counter
    samples = [0.0] * n
    for i in range(n):
        start = clock()
        ask(i)
        samples[i] = clock() - start
    ref.stop()
    return Latency.of(samples)


# -- 3. spawn + stop -------------------------------------------------------------------------


async def spawn_batch_ours(system: ActorSystem, k: int) -> float:
    tally = Tally(k)
    props = Props(lambda: IdleActor(tally))
    start = time.perf_counter()
    refs = [system.actor_of(props) for _ in range(k)]
    await tally.all_started.wait()
    for ref in refs:
        ref.stop()
    for ref in refs:
        await ref.wait_stopped()
    return (time.perf_counter() - start) / k * 1e6


async def spawn_sequential_ours(system: ActorSystem, k: int) -> float:
    tally = Tally(k)
    props = Props(lambda: IdleActor(tally))
    start = time.perf_counter()
    for _ in range(k):
        ref = system.actor_of(props)
        await asyncio.sleep(0)  # its task runs up to the empty mailbox
        ref.stop()
        await ref.wait_stopped()
    elapsed = time.perf_counter() - start
    if tally.started != k:
        raise RuntimeError(f"only {tally.started} of {k} actors started")
    return elapsed / k * 1e6


async def spawn_batch_tasks(k: int) -> float:
    """The floor: one task per 'actor', parked on a future until told to stop."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    stops: list[asyncio.Future[None]] = [loop.create_future() for _ in range(k)]
    tasks = [asyncio.create_task(_wait(stop)) for stop in stops]
    await asyncio.sleep(0)
    for stop in stops:
        stop.set_result(None)
    for task in tasks:
        await task
    return (time.perf_counter() - start) / k * 1e6


async def spawn_sequential_tasks(k: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for _ in range(k):
        stop: asyncio.Future[None] = loop.create_future()
        task = asyncio.create_task(_wait(stop))
        await asyncio.sleep(0)
        stop.set_result(None)
        await task
    return (time.perf_counter() - start) / k * 1e6


async def _wait(stop: asyncio.Future[None]) -> None:
    await stop


class PykkaIdle(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> None:
        pass


def spawn_pykka(k: int) -> float:
    start = time.perf_counter()
    for _ in range(k):
        PykkaIdle.start().stop()
    return (time.perf_counter() - start) / k * 1e6


# -- running it all --------------------------------------------------------------------------


@dataclass
class Results:
    tell: dict[str, float] = field(default_factory=dict)
    ask: dict[str, Latency] = field(default_factory=dict)
    spawn: dict[str, float] = field(default_factory=dict)


async def run_asyncio(sizes: Sizes, results: Results) -> None:
    system = ActorSystem.create("bench")
    repeats = sizes.repeats

    log(f"tell: {sizes.tell:,} messages x {repeats} runs")
    tells = await alternate(
        {
            "queue": lambda: tell_queue(sizes.tell, None),
            "ours": lambda: tell_ours(system, sizes.tell, None),
            "queue_bounded": lambda: tell_queue(sizes.tell, BOUNDED_CAPACITY),
            "ours_bounded": lambda: tell_ours(system, sizes.tell, BOUNDED_CAPACITY),
        },
        repeats,
    )
    results.tell.update({name: statistics.median(runs) for name, runs in tells.items()})

    log(f"ask: {sizes.ask:,} sequential asks x {repeats} runs")
    asks = await alternate(
        {
            "future": lambda: ask_future(sizes.ask),
            "ours": lambda: ask_ours(system, sizes.ask, EchoActor),
            "ours_async": lambda: ask_ours(system, sizes.ask, AsyncEchoActor),
            "ours_no_timeout": lambda: ask_ours(system, sizes.ask, EchoActor, timeout=None),
            "ours_direct": lambda: ask_ours(system, sizes.ask, DirectEchoActor),
        },
        repeats,
    )
    results.ask.update({name: Latency.median(runs) for name, runs in asks.items()})

    log(
        f"spawn+stop: {sizes.spawn:,} in a batch, {sizes.spawn_sequential:,} one by one"
        f" x {repeats} runs"
    )
    spawns = await alternate(
        {
            "tasks": lambda: spawn_batch_tasks(sizes.spawn),
            "ours": lambda: spawn_batch_ours(system, sizes.spawn),
            "tasks_sequential": lambda: spawn_sequential_tasks(sizes.spawn_sequential),
            "ours_sequential": lambda: spawn_sequential_ours(system, sizes.spawn_sequential),
        },
        repeats,
    )
    results.spawn.update({name: statistics.median(runs) for name, runs in spawns.items()})

    await system.shutdown()


def run_pykka(sizes: Sizes, results: Results) -> None:
    repeats = sizes.pykka_repeats
    log(
        f"pykka: {sizes.pykka_tell:,} tells, {sizes.pykka_ask:,} asks,"
        f" {sizes.pykka_spawn:,} start+stop x {repeats} runs"
    )
    try:
        results.tell["pykka"] = statistics.median(
            repeat_sync(lambda: tell_pykka(sizes.pykka_tell), repeats)
        )
        results.ask["pykka"] = Latency.median(
            repeat_sync(lambda: ask_pykka(sizes.pykka_ask), repeats)
        )
        results.spawn["pykka"] = statistics.median(
            repeat_sync(lambda: spawn_pykka(sizes.pykka_spawn), repeats)
        )
    finally:
        pykka.ActorRegistry.stop_all()


# -- the table -------------------------------------------------------------------------------


def rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    return f"{value / 1e3:.0f} k/s"


def micros(value: float) -> str:
    return f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"


@dataclass
class Row:
    measure: str
    ours: str
    floor: str = "—"
    vs_floor: str = "—"
    pykka: str = "—"
    vs_pykka: str = "—"
    floor_vs_pykka: str = "—"
    targets: list[str] = field(default_factory=list)


def throughput_row(
    measure: str, ours: float, floor: float, pykka: float | None, gate_floor: bool
) -> Row:
    ratio = ours / floor
    row = Row(measure, rate(ours), rate(floor), f"{ratio:.2f}x")
    if gate_floor:
        row.targets.append(
            f"≥ {TELL_VS_QUEUE_MIN:g}x asyncio: {verdict(ratio >= TELL_VS_QUEUE_MIN)}"
        )
    if pykka is not None:
        speedup = ours / pykka
        row.pykka, row.vs_pykka = rate(pykka), f"{speedup:.1f}x"
        row.floor_vs_pykka = f"{floor / pykka:.1f}x"
        row.targets.append(f"≥ {VS_PYKKA_MIN:g}x Pykka: {verdict(speedup >= VS_PYKKA_MIN)}")
    return row


def cost_row(
    measure: str,
    ours: float,
    floor: float,
    pykka: float | None,
    *,
    max_ratio: float | None = None,
    max_us: float | None = None,
) -> Row:
    """A row of costs (latency, µs per actor): lower is better; ratios are ours / floor."""
    ratio = ours / floor
    row = Row(measure, micros(ours), micros(floor), f"{ratio:.2f}x")
    if max_ratio is not None:
        row.targets.append(f"≤ {max_ratio:g}x asyncio: {verdict(ratio <= max_ratio)}")
    if max_us is not None:
        row.targets.append(f"≤ {max_us:g} µs: {verdict(ours <= max_us)}")
    if pykka is not None:
        speedup = pykka / ours
        row.pykka, row.vs_pykka = micros(pykka), f"{speedup:.1f}x"
        row.floor_vs_pykka = f"{pykka / floor:.1f}x"
        row.targets.append(f"≥ {VS_PYKKA_MIN:g}x Pykka: {verdict(speedup >= VS_PYKKA_MIN)}")
    return row


def build_rows(r: Results) -> list[Row]:
    ask, pykka_ask = r.ask, r.ask["pykka"]
    return [
        throughput_row(
            "tell throughput, unbounded mailbox",
            r.tell["ours"],
            r.tell["queue"],
            r.tell["pykka"],
            gate_floor=True,
        ),
        throughput_row(
            f"tell throughput, mailbox of {BOUNDED_CAPACITY} (producer yields when full)",
            r.tell["ours_bounded"],
            r.tell["queue_bounded"],
            None,
            gate_floor=False,
        ),
        cost_row(
            "ask round trip p50, sync receive",
            ask["ours"].p50_us,
            ask["future"].p50_us,
            pykka_ask.p50_us,
            max_ratio=ASK_VS_FUTURE_MAX,
        ),
        cost_row(
            "ask round trip p99, sync receive",
            ask["ours"].p99_us,
            ask["future"].p99_us,
            pykka_ask.p99_us,
        ),
        cost_row(
            "ask round trip p50, async receive",
            ask["ours_async"].p50_us,
            ask["future"].p50_us,
            pykka_ask.p50_us,
        ),
        cost_row(
            "ask round trip p99, async receive",
            ask["ours_async"].p99_us,
            ask["future"].p99_us,
            pykka_ask.p99_us,
        ),
        cost_row(
            "ask round trip p50, sync receive, `timeout=None`",
            ask["ours_no_timeout"].p50_us,
            ask["future"].p50_us,
            None,
        ),
        cost_row(
            "ask round trip p50, sync receive, `direct_delivery` (idle actor)",
            ask["ours_direct"].p50_us,
            ask["future"].p50_us,
            None,
        ),
        cost_row(
            "spawn + stop per actor, batch",
            r.spawn["ours"],
            r.spawn["tasks"],
            r.spawn["pykka"],
            max_us=SPAWN_STOP_MAX_US,
        ),
        cost_row(
            "spawn + stop per actor, one at a time",
            r.spawn["ours_sequential"],
            r.spawn["tasks_sequential"],
            r.spawn["pykka"],
        ),
    ]


def render_table(rows: list[Row]) -> str:
    header = (
        "| Measure | inference_runtime | bare asyncio | ours / asyncio | Pykka | ours vs Pykka"
        " | asyncio vs Pykka | Targets |"
    )
    lines = [header, "|---|--:|--:|--:|--:|--:|--:|---|"]
    for row in rows:
        targets = "; ".join(row.targets) or "(info)"
        cells = (
            row.measure,
            row.ours,
            row.floor,
            row.vs_floor,
            row.pykka,
            row.vs_pykka,
            row.floor_vs_pykka,
            targets,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(rows: list[Row], sizes: Sizes, argv: Sequence[str]) -> str:
    cores = core_count()
    loop = asyncio.new_event_loop()
    loop_name = type(loop).__name__
    loop.close()
    command = shlex.join(["python", "bench/actors.py", *argv])
    verdicts = [t for row in rows for t in row.targets]
    failed = sum("FAIL" in t for t in verdicts)
    return "\n".join(
        [
            f"- Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- Machine: {cores} cores, {cpu_model()}",
            f"- Python {platform.python_version()} ({platform.python_implementation()}),"
            f" event loop `{loop_name}`,"
            f" Pykka {importlib.metadata.version('pykka')}",
            f"- Command: `{command}`",
            f"- Sizes: tell {sizes.tell:,} messages (Pykka {sizes.pykka_tell:,}),"
            f" {sizes.ask:,} asks (Pykka {sizes.pykka_ask:,}), spawn+stop {sizes.spawn:,} in a"
            f" batch and {sizes.spawn_sequential:,} one at a time (Pykka {sizes.pykka_spawn:,});"
            f" median of {sizes.repeats} runs (Pykka {sizes.pykka_repeats}) after one warmup",
            "",
            render_table(rows),
            "",
            f"Targets: {len(verdicts) - failed} of {len(verdicts)} pass.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per measurement (median reported)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table into PATH")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    sizes = Sizes().quick() if args.quick else Sizes()
    if args.repeats is not None:
        sizes = replace(sizes, repeats=args.repeats, pykka_repeats=args.repeats)

    started = time.perf_counter()
    results = Results()
    asyncio.run(run_asyncio(sizes, results))
    run_pykka(sizes, results)
    log(f"done in {time.perf_counter() - started:.1f} s")

    report = render_report(build_rows(results), sizes, argv)
    print(report)
    if args.markdown is not None:
        write_section(args.markdown, report, BEGIN_MARKER, END_MARKER)
        log(f"wrote the table into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
