"""Property tests of the actor kernel: message order, and the restart window rule.

Each example of the actor-level properties builds a fresh ``ActorSystem`` inside its own
``asyncio.run``, so the tests are sync functions under ``@given``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ActorStopped,
    ActorSystem,
    ChildFailed,
    OneForOneStrategy,
    Props,
    RestartWindow,
    SupervisorStrategy,
)
from inference_runtime.testing import ManualClock

ASK_TIMEOUT = 5.0
ACTOR_SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


# -- 1. message order per sender-receiver pair ----------------------------------------------


class OrderReceiver(Actor):
    """Records ``(tag, sender index, seq, context.sender)`` for every numbered message."""

    def __init__(self, log: list[tuple[str, int, int, ActorRef | None]], yields: bool) -> None:
        self.log = log
        self.yields = yields

    async def receive(self, message: Any) -> Any:
        if message == "log":
            return list(self.log)
        tag, index, seq = message
        self.log.append((tag, index, seq, self.context.sender))
        if self.yields:
            await asyncio.sleep(0)
        return seq


class OrderSender(Actor):
    """On ``("burst", n)`` tells the receiver its next ``n`` numbered messages."""

    def __init__(self, index: int, receiver: ActorRef, yields: bool) -> None:
        self.index = index
        self.receiver = receiver
        self.yields = yields
        self.next_seq = 0

    async def receive(self, message: Any) -> Any:
        if message == "sync":
            return self.next_seq
        _, count = message
        for _ in range(count):
            self.receiver.tell(("actor", self.index, self.next_seq), sender=self.context.self_ref)
            self.next_seq += 1
            if self.yields:
                await asyncio.sleep(0)
        return None


# Tokens of a schedule: ("burst", i) sends sender i its next burst; ("tell",) and ("ask", True)
# / ("ask", False) are the outside sender's tell, awaited ask and background ask; ("yield",)
# lets the loop run once.
Token = tuple[Any, ...]


@dataclass(frozen=True)
class OrderScenario:
    bursts: list[list[int]]
    """Per sender, the sizes of its bursts, in order."""
    schedule: list[Token]
    sender_yields: bool
    receiver_yields: bool
    receiver_throughput: int
    sender_throughput: int


@st.composite
def order_scenarios(draw: st.DrawFn, *, with_outside: bool) -> OrderScenario:
    n_senders = draw(st.integers(1, 5))
    bursts = [
        draw(st.lists(st.integers(1, 5), min_size=0 if with_outside else 1, max_size=6))
        for _ in range(n_senders)
    ]
    tokens: list[Token] = [("burst", i) for i, sizes in enumerate(bursts) for _ in sizes]
    if with_outside:
        tokens += draw(
            st.lists(
                st.sampled_from([("tell",), ("ask", True), ("ask", False)]),
                min_size=1,
                max_size=20,
            )
        )
    tokens += [("yield",)] * draw(st.integers(0, 8))
    schedule = draw(st.permutations(tokens))
    return OrderScenario(
        bursts=bursts,
        schedule=list(schedule),
        sender_yields=draw(st.booleans()),
        receiver_yields=draw(st.booleans()),
        receiver_throughput=draw(st.integers(1, 8)),
        sender_throughput=draw(st.integers(1, 8)),
    )


async def _start_ask(ref: ActorRef, message: object) -> asyncio.Task[Any]:
    """Start ``ref.ask(message)`` in the background; return once the ask is in the mailbox.

    ``ask`` queues its message synchronously before its first await, so once the task has run
    its first step (the flag is set just before) the message is queued.
    """
    started = asyncio.Event()

    async def run() -> Any:
        started.set()
        return await ref.ask(message, timeout=ASK_TIMEOUT)

    task = asyncio.ensure_future(run())
    await started.wait()
    return task


async def _order_scenario(scenario: OrderScenario) -> None:
    system = ActorSystem.create("order")
    try:
        log: list[tuple[str, int, int, ActorRef | None]] = []
        receiver = system.actor_of(
            Props(
                lambda: OrderReceiver(log, scenario.receiver_yields),
                mailbox_capacity=None,
                throughput=scenario.receiver_throughput,
            ),
            "receiver",
        )
        senders = [
            system.actor_of(
                Props(
                    lambda i=i: OrderSender(i, receiver, scenario.sender_yields),
                    mailbox_capacity=None,
                    throughput=scenario.sender_throughput,
                ),
                f"sender-{i}",
            )
            for i in range(len(scenario.bursts))
        ]
        next_burst = [0] * len(senders)
        outside_seq = 0
        background: list[tuple[int, asyncio.Task[Any]]] = []
        awaited: list[tuple[int, Any]] = []
        for token in scenario.schedule:
            if token[0] == "burst":
                i = token[1]
                senders[i].tell(("burst", scenario.bursts[i][next_burst[i]]))
                next_burst[i] += 1
            elif token[0] == "tell":
                receiver.tell(("outside", -1, outside_seq))
                outside_seq += 1
            elif token[0] == "ask":
                message = ("outside", -1, outside_seq)
                if token[1]:
                    awaited.append((outside_seq, await receiver.ask(message, timeout=ASK_TIMEOUT)))
                else:
                    background.append((outside_seq, await _start_ask(receiver, message)))
                outside_seq += 1
            else:
                await asyncio.sleep(0)

        for seq, task in background:
            awaited.append((seq, await task))
        for seq, answer in awaited:
            assert answer == seq, f"the ask of outside message {seq} was answered {answer!r}"
        # A sender answers "sync" only after its earlier bursts, whose tells are then queued at
        # the receiver; the receiver answers "log" only after those.
        for i, sender in enumerate(senders):
            assert await sender.ask("sync", timeout=ASK_TIMEOUT) == sum(scenario.bursts[i])
        final_log = await receiver.ask("log", timeout=ASK_TIMEOUT)

        for i, sender in enumerate(senders):
            seen = [seq for tag, index, seq, _ in final_log if tag == "actor" and index == i]
            assert seen == list(range(sum(scenario.bursts[i]))), f"sender {i} was seen as {seen}"
            refs = {ref for tag, index, _, ref in final_log if tag == "actor" and index == i}
            expected_refs = {sender} if seen else set()
            assert refs == expected_refs, f"sender {i}'s messages carried context.sender {refs}"
        outside = [seq for tag, _, seq, _ in final_log if tag == "outside"]
        assert outside == list(range(outside_seq)), f"outside tells/asks were seen as {outside}"
        outside_refs = {ref for tag, _, _, ref in final_log if tag == "outside"}
        assert outside_refs == ({None} if outside else set())
        assert len(final_log) == outside_seq + sum(map(sum, scenario.bursts))
    finally:
        await system.shutdown()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(order_scenarios(with_outside=False))
def test_messages_from_each_sender_arrive_in_order(scenario: OrderScenario) -> None:
    asyncio.run(_order_scenario(scenario))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(order_scenarios(with_outside=True))
def test_outside_tells_and_asks_stay_in_order_among_actor_senders(
    scenario: OrderScenario,
) -> None:
    asyncio.run(_order_scenario(scenario))


# -- 2. the restart window rule, on RestartWindow itself ----------------------------------


def _in_window(accepted: Sequence[float], t: float, within: float) -> int:
    """How many of ``accepted`` lie in ``(t - within, t]``, spelled as the docs spell it."""
    low = t - within
    return sum(1 for s in accepted if low < s <= t)


@st.composite
def failure_times(draw: st.DrawFn, within: float) -> list[float]:
    """Non-decreasing times in [0, 300], often exactly ``k * within`` apart (window edges)."""
    base = draw(st.lists(st.floats(0, 300, allow_nan=False, allow_infinity=False), max_size=25))
    times = list(base)
    for t in base:
        for k in draw(st.lists(st.integers(1, 3), max_size=2)):
            edge = t + k * within
            if edge <= 300:
                times.append(edge)
    times += draw(st.lists(st.sampled_from(base), max_size=4)) if base else []
    return sorted(times)


# ``within`` is kept above 1e-6 s: far below that, ``t - within`` rounds to ``t`` for the times
# used here, and the half-open window ``(t - within, t]`` is empty in floating point.
windows = st.floats(1e-6, 120, allow_nan=False, allow_infinity=False) | (
    st.sampled_from([0.5, 1.0, 10.0, 60.0, 120.0])
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    max_restarts=st.integers(0, 5),
    within_and_times=windows.flatmap(lambda w: st.tuples(st.just(w), failure_times(w))),
)
def test_restart_window_rule(
    max_restarts: int, within_and_times: tuple[float, list[float]]
) -> None:
    within, times = within_and_times
    window = RestartWindow()
    accepted: list[float] = []
    for t in times:
        before = _in_window(accepted, t, within)
        assert before <= max_restarts
        number = window.try_restart(now=t, max_restarts=max_restarts, within=within)
        if number is None:
            # (b) refused only when the window is exactly full
            assert before == max_restarts, (
                f"refused at t={t} with {before} < {max_restarts} restarts in the window"
            )
        else:
            assert before < max_restarts, f"accepted at t={t} with a full window"
            accepted.append(t)
            # (c) the number counts this restart among those in the window
            assert 1 <= number <= max_restarts
            assert number == before + 1 == _in_window(accepted, t, within)
        assert len(window) == _in_window(accepted, t, within)
    if len(accepted) > max_restarts:
        event("the window slid: more restarts in total than max_restarts")
    if any(s == t - within for s in accepted for t in times):
        event("a failure fell exactly on a window edge")
    # (a) no half-open window holds more than max_restarts accepted restarts; the fullest
    # window ends at an accepted time.
    for t in accepted + times:
        assert _in_window(accepted, t, within) <= max_restarts


# -- 3. the same rule end to end, through a supervising parent and a ManualClock -------------


class Boom(Exception):
    def __init__(self, number: int) -> None:
        super().__init__(f"failure #{number}")
        self.number = number


class FailingChild(Actor):
    def __init__(self, incarnations: list[int]) -> None:
        incarnations.append(len(incarnations))

    def receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "fail":
            raise Boom(message[1])
        return "pong"


class AsyncFailingChild(FailingChild):
    async def receive(self, message: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().receive(message)


class SupervisingParent(Actor):
    def __init__(
        self, strategy: SupervisorStrategy, child_props: Props, events: list[ChildFailed]
    ) -> None:
        self.strategy = strategy
        self.child_props = child_props
        self.events = events
        self.child: ActorRef | None = None

    def pre_start(self) -> None:
        self.child = self.context.spawn(self.child_props, "child")

    def supervisor_strategy(self) -> SupervisorStrategy:
        return self.strategy

    def receive(self, message: Any) -> Any:
        if isinstance(message, ChildFailed):
            self.events.append(message)
            return None
        if message == "child":
            return self.child
        if message == "events":
            return list(self.events)
        raise AssertionError(f"unexpected message {message!r}")


@dataclass(frozen=True)
class RestartScenario:
    max_restarts: int
    within: float
    gaps: list[float]
    """Clock advance before each failure."""
    async_child: bool


@st.composite
def restart_scenarios(draw: st.DrawFn) -> RestartScenario:
    within = draw(windows)
    gap = (
        st.just(0.0)
        | st.sampled_from([within, within / 2, 2 * within])
        | st.floats(0, 2 * within, allow_nan=False, allow_infinity=False)
        | st.floats(0, 150, allow_nan=False, allow_infinity=False)
    )
    return RestartScenario(
        max_restarts=draw(st.integers(0, 5)),
        within=within,
        gaps=draw(st.lists(gap, min_size=1, max_size=12)),
        async_child=draw(st.booleans()),
    )


async def _ping(ref: ActorRef) -> str:
    try:
        answer: str = await ref.ask("ping", timeout=ASK_TIMEOUT)
    except ActorStopped:
        return "stopped"
    return answer


async def _restart_scenario(scenario: RestartScenario) -> None:
    clock = ManualClock()
    system = ActorSystem.create("p", clock=clock)
    try:
        m, w = scenario.max_restarts, scenario.within
        incarnations: list[int] = []
        events: list[ChildFailed] = []
        child_class = AsyncFailingChild if scenario.async_child else FailingChild
        child_props = Props(lambda: child_class(incarnations))
        parent = system.actor_of(
            Props(lambda: SupervisingParent(OneForOneStrategy(m, w), child_props, events)),
            "parent",
        )
        child: ActorRef = await parent.ask("child", timeout=ASK_TIMEOUT)
        assert await _ping(child) == "pong"

        accepted: list[float] = []  # the model: times of the restarts granted so far
        stopped_at: int | None = None
        t = 0.0
        for k, gap in enumerate(scenario.gaps):
            clock.advance(gap)
            t = t + gap
            assert clock.now() == t
            restart = _in_window(accepted, t, w) < m
            if any(s == t - w for s in accepted):
                event("a failure fell exactly on a window edge")
            child.tell(("fail", k))
            # The ping queues behind the failure: the restarted instance answers it, or the stop
            # fails it with ActorStopped.
            outcome = await _ping(child)
            expected = "pong" if restart else "stopped"
            assert outcome == expected, (
                f"failure #{k} at t={t}: model says {expected} (restarts at {accepted}, "
                f"max_restarts={m}, within={w}), kernel says {outcome}"
            )
            if not restart:
                stopped_at = k
                await child.wait_stopped()
                break
            accepted.append(t)
            assert child.is_alive
            assert await parent.ask("events", timeout=ASK_TIMEOUT) == []

        event("child stopped" if stopped_at is not None else "child survived")
        if len(accepted) > m:
            event("the window slid: more restarts in total than max_restarts")
        stats = child.statistics()
        assert stats.restarts == len(accepted)
        assert stats.failures == (len(scenario.gaps) if stopped_at is None else stopped_at + 1)
        assert len(incarnations) == 1 + len(accepted)
        assert stats.alive == (stopped_at is None)
        seen: list[ChildFailed] = await parent.ask("events", timeout=ASK_TIMEOUT)
        if stopped_at is None:
            assert seen == []
        else:
            assert len(seen) == 1, seen
            (failed,) = seen
            assert failed.ref == child
            assert failed.restart_limit_exceeded is True
            assert isinstance(failed.error, Boom)
            assert failed.error.number == stopped_at
    finally:
        await system.shutdown()


@ACTOR_SETTINGS
@given(restart_scenarios())
def test_restart_limit_end_to_end_matches_model(scenario: RestartScenario) -> None:
    asyncio.run(_restart_scenario(scenario))
