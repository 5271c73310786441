"""Death watch and timers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props, Terminated
from inference_runtime.testing import ManualClock


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Idle(Actor):
    def receive(self, message: Any) -> Any:
        if isinstance(message, Exception):
            raise message
        return message


class Watcher(Actor):
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any) -> Any:
        match message:
            case ("watch", ActorRef() as ref):
                self.context.watch(ref)
            case ("unwatch", ActorRef() as ref):
                self.context.unwatch(ref)
            case ("unwatch-after-stop", ActorRef() as ref):
                ref.stop()  # Terminated may be queued before unwatch runs
                self.context.unwatch(ref)
            case Terminated():
                self.seen.append(message)
        return None


@pytest.fixture
async def system() -> Any:
    clock = ManualClock()
    system = ActorSystem.create("watch", clock=clock)
    system.test_clock = clock  # type: ignore[attr-defined]
    yield system
    await system.shutdown()


async def test_watcher_gets_terminated(system: ActorSystem) -> None:
    seen: list[Any] = []
    watcher = system.actor_of(Props(lambda: Watcher(seen)))
    target = system.actor_of(Props(Idle))
    await watcher.ask(("watch", target))
    target.stop()
    await target.wait_stopped()
    await watcher.ask("sync")
    assert seen == [Terminated(target)]


async def test_watch_of_already_stopped_actor(system: ActorSystem) -> None:
    seen: list[Any] = []
    watcher = system.actor_of(Props(lambda: Watcher(seen)))
    target = system.actor_of(Props(Idle))
    target.stop()
    await target.wait_stopped()
    await watcher.ask(("watch", target))
    await watcher.ask("sync")
    assert seen == [Terminated(target)]


async def test_watch_sees_restart_limit_stop(system: ActorSystem) -> None:
    seen: list[Any] = []
    watcher = system.actor_of(Props(lambda: Watcher(seen)))
    target = system.actor_of(Props(Idle))
    await watcher.ask(("watch", target))
    for _ in range(4):
        target.tell(ValueError("x"))
    await target.wait_stopped()
    await watcher.ask("sync")
    assert seen == [Terminated(target)]


async def test_unwatch_means_no_terminated(system: ActorSystem) -> None:
    seen: list[Any] = []
    watcher = system.actor_of(Props(lambda: Watcher(seen)))
    target = system.actor_of(Props(Idle))
    await watcher.ask(("watch", target))
    await watcher.ask(("unwatch", target))
    target.stop()
    await target.wait_stopped()
    await watcher.ask("sync")
    assert seen == []


async def test_unwatch_drops_an_already_queued_terminated(system: ActorSystem) -> None:
    seen: list[Any] = []

    class SlowWatcher(Watcher):
        async def receive(self, message: Any) -> Any:
            if message == "stop-then-unwatch":
                target = self.target
                target.stop()
                await target.wait_stopped()  # Terminated is now in our mailbox
                self.context.unwatch(target)
                return None
            if isinstance(message, tuple) and message[0] == "watch":
                self.target = message[1]
            return super().receive(message)

    watcher = system.actor_of(Props(lambda: SlowWatcher(seen)))
    target = system.actor_of(Props(Idle))
    await watcher.ask(("watch", target))
    await watcher.ask("stop-then-unwatch")
    await watcher.ask("sync")
    assert seen == []


async def test_stopped_watcher_is_forgotten(system: ActorSystem) -> None:
    watcher = system.actor_of(Props(lambda: Watcher([])))
    target = system.actor_of(Props(Idle))
    await watcher.ask(("watch", target))
    assert len(target._cell.watchers) == 1
    watcher.stop()
    await watcher.wait_stopped()
    assert len(target._cell.watchers) == 0
    target.stop()
    await target.wait_stopped()
    assert system.dead_letters.count == 0


class Ticker(Actor):
    def __init__(self, ticks: list[Any]) -> None:
        self.ticks = ticks

    def receive(self, message: Any) -> Any:
        match message:
            case ("once", delay, payload):
                self.context.schedule_once(delay, payload, key="k")
            case ("every", interval, payload):
                self.context.schedule_repeatedly(interval, payload, key="r")
            case ("cancel", key):
                self.context.cancel_timer(key)
            case "fail":
                raise RuntimeError("restart me")
            case _:
                self.ticks.append(message)
        return None


async def test_schedule_once(system: ActorSystem) -> None:
    clock: ManualClock = system.test_clock  # type: ignore[attr-defined]
    ticks: list[Any] = []
    ref = system.actor_of(Props(lambda: Ticker(ticks)))
    await ref.ask(("once", 5.0, "tick"))
    clock.advance(4.9)
    await ref.ask("sync")
    assert ticks == ["sync"]
    clock.advance(0.1)
    await ref.ask("sync")
    assert ticks == ["sync", "tick", "sync"]
    clock.advance(100)
    await ref.ask("sync")
    assert ticks.count("tick") == 1
    assert ref.statistics().timers == 0


async def test_same_key_replaces_timer(system: ActorSystem) -> None:
    clock: ManualClock = system.test_clock  # type: ignore[attr-defined]
    ticks: list[Any] = []
    ref = system.actor_of(Props(lambda: Ticker(ticks)))
    await ref.ask(("once", 5.0, "first"))
    await ref.ask(("once", 10.0, "second"))
    clock.advance(20)
    await ref.ask("sync")
    assert "first" not in ticks and "second" in ticks


async def test_schedule_repeatedly_and_cancel(system: ActorSystem) -> None:
    clock: ManualClock = system.test_clock  # type: ignore[attr-defined]
    ticks: list[Any] = []
    ref = system.actor_of(Props(lambda: Ticker(ticks)))
    await ref.ask(("every", 1.0, "beat"))
    for _ in range(3):
        clock.advance(1.0)
    await ref.ask("sync")
    assert ticks.count("beat") == 3
    await ref.ask(("cancel", "r"))
    clock.advance(10)
    await ref.ask("sync")
    assert ticks.count("beat") == 3


async def test_timers_cancelled_on_stop(system: ActorSystem) -> None:
    clock: ManualClock = system.test_clock  # type: ignore[attr-defined]
    ticks: list[Any] = []
    ref = system.actor_of(Props(lambda: Ticker(ticks)))
    await ref.ask(("every", 1.0, "beat"))
    assert clock.pending == 1
    ref.stop()
    await ref.wait_stopped()
    assert clock.pending == 0
    clock.advance(5)
    assert system.dead_letters.count == 0


async def test_timers_cancelled_on_restart(system: ActorSystem) -> None:
    clock: ManualClock = system.test_clock  # type: ignore[attr-defined]
    ticks: list[Any] = []
    ref = system.actor_of(Props(lambda: Ticker(ticks)))
    await ref.ask(("every", 1.0, "beat"))
    ref.tell("fail")
    await ref.ask("sync")
    assert clock.pending == 0
    clock.advance(5)
    await ref.ask("sync")
    assert "beat" not in ticks


async def test_timers_on_the_real_loop_clock() -> None:
    system = ActorSystem.create("real")
    ticks: list[Any] = []
    ref = system.actor_of(Props(lambda: Ticker(ticks)))
    await ref.ask(("once", 0.001, "tick"))
    for _ in range(200):
        if "tick" in ticks:
            break
        await asyncio.sleep(0.005)
    assert "tick" in ticks
    await system.shutdown()


async def test_timer_validation(system: ActorSystem) -> None:
    ref = system.actor_of(Props(lambda: Ticker([])))
    with pytest.raises(ValueError, match="timer"):
        await ref.ask(("every", 0, "x"))
