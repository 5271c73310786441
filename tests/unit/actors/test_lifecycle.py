"""Spawning, names, tell/ask, stopping, dead letters, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import (
    Actor,
    ActorNameTaken,
    ActorStopped,
    ActorSystem,
    AskTimeout,
    Deferred,
    InvalidActorName,
    MailboxFull,
    PoisonPill,
    Props,
)


class Recorder(Actor):
    def __init__(self, log: list[Any] | None = None) -> None:
        self.log = log if log is not None else []

    def receive(self, message: Any) -> Any:
        self.log.append(message)
        if isinstance(message, Exception):
            raise message
        return message


class Gate(Actor):
    """Blocks on an event inside receive, to hold messages in the mailbox."""

    def __init__(self, gate: asyncio.Event, seen: list[Any]) -> None:
        self.gate = gate
        self.seen = seen

    async def receive(self, message: Any) -> Any:
        self.seen.append(message)
        await self.gate.wait()
        return message


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_create_needs_running_loop() -> None:
    def make() -> ActorSystem:
        return ActorSystem.create("x")

    with pytest.raises(RuntimeError, match="running event loop"):
        await asyncio.to_thread(make)


async def test_tell_and_ask(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = system.actor_of(Props(lambda: Recorder(log)), "rec")
    ref.tell("a")
    assert await ref.ask("b") == "b"
    assert log == ["a", "b"]
    assert ref.path == "/user/rec"
    assert ref.name == "rec"


async def test_async_receive_answers_ask(system: ActorSystem) -> None:
    class Doubler(Actor):
        async def receive(self, message: int) -> int:
            await asyncio.sleep(0)
            return message * 2

    ref = system.actor_of(Props(Doubler))
    assert await ref.ask(21) == 42


async def test_ask_raises_what_receive_raised(system: ActorSystem) -> None:
    ref = system.actor_of(Props(Recorder), "r")
    with pytest.raises(KeyError):
        await ref.ask(KeyError("nope"))
    assert await ref.ask("after") == "after"  # restarted by the default strategy


async def test_names_unique_among_siblings(system: ActorSystem) -> None:
    system.actor_of(Props(Recorder), "dp")
    with pytest.raises(ActorNameTaken, match="dp"):
        system.actor_of(Props(Recorder), "dp")
    for bad in ["", "a/b", "$x", "sp ace"]:
        with pytest.raises(InvalidActorName):
            system.actor_of(Props(Recorder), bad)


async def test_name_free_again_after_stop(system: ActorSystem) -> None:
    first = system.actor_of(Props(Recorder), "again")
    first.stop()
    await first.wait_stopped()
    second = system.actor_of(Props(Recorder), "again")
    assert second != first
    assert second.path == first.path
    assert await second.ask(1) == 1


async def test_generated_names_are_unique(system: ActorSystem) -> None:
    refs = [system.actor_of(Props(Recorder)) for _ in range(100)]
    assert len({r.path for r in refs}) == 100
    assert all(r.name.startswith("$") for r in refs)


async def test_refs_hashable_and_comparable(system: ActorSystem) -> None:
    a = system.actor_of(Props(Recorder), "a")
    b = system.actor_of(Props(Recorder), "b")
    assert {a, b, a} == {a, b}
    assert a < b
    assert "a#" in repr(a)


async def test_nested_paths(system: ActorSystem) -> None:
    paths: list[str] = []

    class Ctx(Actor):
        def pre_start(self) -> None:
            paths.append(self.context.self_ref.path)

        def receive(self, message: Any) -> None:
            pass

    class Worker(Actor):
        def pre_start(self) -> None:
            self.context.spawn(Props(Ctx), "ctx")

        def receive(self, message: Any) -> None:
            pass

    class Engine(Actor):
        def pre_start(self) -> None:
            self.context.spawn(Props(Worker), "worker")

        def receive(self, message: Any) -> list[str]:
            return [c.path for c in self.context.children]

    engine = system.actor_of(Props(Engine), "engine-0")
    assert await engine.ask("children") == ["/user/engine-0/worker"]
    await settle()
    assert paths == ["/user/engine-0/worker/ctx"]


async def test_context_parent_children_sender(system: ActorSystem) -> None:
    seen: dict[str, Any] = {}

    class Child(Actor):
        def receive(self, message: Any) -> None:
            seen["sender"] = self.context.sender
            seen["parent"] = self.context.parent

    class Parent(Actor):
        def receive(self, message: Any) -> Any:
            child = self.context.spawn(Props(Child), "c")
            child.tell("hi", sender=self.context.self_ref)
            return child

    parent = system.actor_of(Props(Parent), "p")
    child = await parent.ask("spawn")
    await settle()
    assert seen == {"sender": parent, "parent": parent}
    assert child.path == "/user/p/c"


async def test_bounded_mailbox_raises_mailbox_full(system: ActorSystem) -> None:
    gate, seen = asyncio.Event(), []
    ref = system.actor_of(Props(lambda: Gate(gate, seen), mailbox_capacity=2), "g")
    ref.tell(0)
    await settle()  # 0 is being handled, the mailbox is empty
    ref.tell(1)
    ref.tell(2)
    with pytest.raises(MailboxFull) as info:
        ref.tell(3)
    assert info.value.retryable
    with pytest.raises(MailboxFull):
        await ref.ask(4)
    assert ref.statistics().mailbox_depth == 2
    gate.set()
    await settle(10)
    assert await ref.ask(5) == 5
    assert seen == [0, 1, 2, 5]


async def test_unbounded_mailbox_is_explicit(system: ActorSystem) -> None:
    gate, seen = asyncio.Event(), []
    ref = system.actor_of(Props(lambda: Gate(gate, seen), mailbox_capacity=None))
    for i in range(5000):
        ref.tell(i)
    gate.set()
    await ref.ask("done")
    assert len(seen) == 5001


def test_props_validation() -> None:
    with pytest.raises(ValueError, match="mailbox_capacity"):
        Props(Recorder, mailbox_capacity=0)
    with pytest.raises(TypeError):
        Props("not callable")  # type: ignore[arg-type]


async def test_factory_must_return_actor(system: ActorSystem) -> None:
    ref = system.actor_of(Props(lambda: object()), "bad")  # type: ignore[arg-type,return-value]
    await ref.wait_stopped()


async def test_ask_timeout(system: ActorSystem) -> None:
    gate, seen = asyncio.Event(), []
    ref = system.actor_of(Props(lambda: Gate(gate, seen)))
    with pytest.raises(AskTimeout) as info:
        await ref.ask("slow", timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    gate.set()


async def test_stop_fails_pending_asks_at_once(system: ActorSystem) -> None:
    gate, seen = asyncio.Event(), []
    ref = system.actor_of(Props(lambda: Gate(gate, seen)), "g")
    in_flight = asyncio.ensure_future(ref.ask("first", timeout=None))
    queued = [asyncio.ensure_future(ref.ask(i, timeout=None)) for i in range(3)]
    await settle()
    assert ref.statistics().mailbox_depth == 3
    ref.stop()
    assert ref.statistics().mailbox_depth == 0  # failed by stop() itself
    await asyncio.sleep(0)
    assert all(q.done() for q in queued)
    for q in queued:
        with pytest.raises(ActorStopped):
            q.result()
    with pytest.raises(ActorStopped):
        await in_flight  # the message being handled is interrupted too
    await ref.wait_stopped()
    assert not ref.is_alive
    with pytest.raises(ActorStopped):
        await ref.ask("late")


async def test_self_stop_finishes_current_message(system: ActorSystem) -> None:
    class Quitter(Actor):
        async def receive(self, message: Any) -> str:
            self.context.stop(self.context.self_ref)
            await asyncio.sleep(0)
            return "finished"

    ref = system.actor_of(Props(Quitter))
    assert await ref.ask("go") == "finished"
    await ref.wait_stopped()


async def test_context_stop_only_self_or_children(system: ActorSystem) -> None:
    other = system.actor_of(Props(Recorder), "other")

    class Meddler(Actor):
        def receive(self, message: Any) -> None:
            self.context.stop(other)

    meddler = system.actor_of(Props(Meddler), "m")
    with pytest.raises(ValueError, match="only itself or its children"):
        await meddler.ask("x")
    assert other.is_alive


async def test_poison_pill_after_queued_messages(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = system.actor_of(Props(lambda: Recorder(log)))
    ref.tell(1)
    ref.tell(2)
    ref.tell(PoisonPill())
    ref.tell(3)  # queued behind the pill: a dead letter
    await ref.wait_stopped()
    assert log == [1, 2]
    assert system.dead_letters.count == 1
    assert system.dead_letters.recent[-1].message == 3


async def test_dead_letters_counted_and_observable(system: ActorSystem) -> None:
    seen: list[Any] = []
    unsubscribe = system.dead_letters.subscribe(lambda letter: seen.append(letter.message))
    ref = system.actor_of(Props(Recorder), "gone")
    sender = system.actor_of(Props(Recorder), "sender")
    ref.stop()
    await ref.wait_stopped()
    ref.tell("lost", sender=sender)
    assert seen == ["lost"]
    letter = system.dead_letters.recent[-1]
    assert (letter.recipient, letter.sender) == (ref, sender)
    assert system.statistics().dead_letters == 1
    unsubscribe()
    ref.tell("lost again")
    assert seen == ["lost"]
    assert system.dead_letters.count == 2


async def test_shutdown_stops_children_before_parents() -> None:
    system = ActorSystem.create("order")
    stopped: list[str] = []

    class Node(Actor):
        def __init__(self, depth: int) -> None:
            self.depth = depth

        def pre_start(self) -> None:
            if self.depth < 3:
                for i in range(2):
                    self.context.spawn(Props(lambda: Node(self.depth + 1)), f"n{i}")

        def receive(self, message: Any) -> None:
            pass

        def post_stop(self) -> None:
            path = self.context.self_ref.path
            assert not self.context.children, f"{path} stopped before its children"
            stopped.append(path)

    system.actor_of(Props(lambda: Node(0)), "root")
    await settle(20)
    await system.shutdown()
    assert len(stopped) == 15
    assert stopped[-1] == "/user/root"
    for path in stopped:
        parent = path.rsplit("/", 1)[0]
        if parent != "/user":
            assert stopped.index(parent) > stopped.index(path)
    assert system.is_terminated
    assert system.statistics().actors_alive == 0


async def test_shutdown_with_messages_still_queued() -> None:
    system = ActorSystem.create("queued")
    gate, seen = asyncio.Event(), []
    ref = system.actor_of(Props(lambda: Gate(gate, seen), mailbox_capacity=None))
    asks = [asyncio.ensure_future(ref.ask(i, timeout=None)) for i in range(3)]
    await settle()
    for i in range(10):
        ref.tell(f"t{i}")
    await settle()
    await system.shutdown()
    results = await asyncio.gather(*asks, return_exceptions=True)
    assert all(isinstance(r, ActorStopped) for r in results)
    assert system.dead_letters.count == 10
    assert seen == [0]


async def test_async_hooks(system: ActorSystem) -> None:
    events: list[str] = []

    class Hooked(Actor):
        async def pre_start(self) -> None:
            await asyncio.sleep(0)
            events.append("pre_start")

        async def post_stop(self) -> None:
            await asyncio.sleep(0)
            events.append("post_stop")

        def receive(self, message: Any) -> None:
            events.append(message)

    ref = system.actor_of(Props(Hooked))
    ref.tell("m")  # queued until pre_start has finished
    await ref.ask("sync")
    ref.stop()
    await ref.wait_stopped()
    assert events == ["pre_start", "m", "sync", "post_stop"]


async def test_stop_interrupts_a_hung_pre_start(system: ActorSystem) -> None:
    class Hung(Actor):
        async def pre_start(self) -> None:
            await asyncio.Event().wait()

        def receive(self, message: Any) -> None:
            pass

    ref = system.actor_of(Props(Hung))
    await settle()
    ref.stop()
    await ref.wait_stopped()


async def test_ten_thousand_actors_no_leaked_tasks() -> None:
    baseline = len(asyncio.all_tasks())
    system = ActorSystem.create("many")
    refs = [system.actor_of(Props(Recorder)) for _ in range(10_000)]
    assert system.statistics().actors_alive == 10_000
    assert await refs[-1].ask("x") == "x"
    for ref in refs:
        ref.stop()
    for ref in refs:
        await ref.wait_stopped()
    stats = system.statistics()
    assert (stats.actors_alive, stats.actors_spawned, stats.actors_stopped) == (0, 10_000, 10_000)
    await system.shutdown()
    await settle()
    assert len(asyncio.all_tasks()) == baseline


async def test_statistics(system: ActorSystem) -> None:
    ref = system.actor_of(Props(Recorder))
    for i in range(5):
        await ref.ask(i)
    with pytest.raises(ValueError):
        await ref.ask(ValueError("x"))
    await ref.ask("again")
    stats = ref.statistics()
    assert (stats.processed, stats.failures, stats.restarts) == (6, 1, 1)
    assert stats.alive and stats.mailbox_depth == 0
    total = system.statistics()
    assert total.messages_processed == 6
    assert total.restarts == 1


async def test_ask_deadlines_share_timers(system: ActorSystem) -> None:
    gate, seen = asyncio.Event(), []
    stuck = system.actor_of(Props(lambda: Gate(gate, seen), mailbox_capacity=None), "stuck")
    fast = system.actor_of(Props(Recorder, mailbox_capacity=None), "fast")
    slow_asks = [asyncio.ensure_future(stuck.ask(i, timeout=0.05)) for i in range(3)]
    other_lane = asyncio.ensure_future(stuck.ask("long", timeout=30))
    # answered asks behind a stuck head are compacted away, not kept until it expires
    for i in range(300):
        assert await fast.ask(i, timeout=0.05) == i
    assert len(system.ask_deadlines) < 300
    results = await asyncio.gather(*slow_asks, return_exceptions=True)
    assert all(isinstance(r, AskTimeout) for r in results)
    assert not other_lane.done()
    gate.set()
    assert await other_lane == "long"


class Forwarder(Actor):
    """Answers each ask later (``Deferred``), after ``gate`` opens for it."""

    def __init__(self, gates: dict[str, asyncio.Event]) -> None:
        self.gates = gates
        self.seen: list[Any] = []

    def receive(self, message: Any) -> Any:
        self.seen.append(message)
        if message == "seen":
            return list(self.seen)
        return Deferred(self._later(message))

    async def _later(self, message: str) -> str:
        await self.gates[message].wait()
        if message.startswith("bad"):
            raise ValueError(message)
        return message.upper()


async def test_a_deferred_answer_does_not_hold_the_mailbox(system: ActorSystem) -> None:
    gates = {name: asyncio.Event() for name in ("a", "b", "bad")}
    ref = system.actor_of(Props(lambda: Forwarder(gates)))
    first = asyncio.ensure_future(ref.ask("a"))
    second = asyncio.ensure_future(ref.ask("b"))
    failing = asyncio.ensure_future(ref.ask("bad"))
    await asyncio.sleep(0)  # the three asks are sent
    assert await ref.ask("seen") == ["a", "b", "bad", "seen"]  # none waited for another
    gates["b"].set()
    assert await second == "B"
    assert not first.done()
    gates["a"].set()
    gates["bad"].set()
    assert await first == "A"
    with pytest.raises(ValueError, match="bad"):
        await failing
    assert ref.is_alive  # what a deferred answer raises is not a failure of the actor
    assert ref.statistics().failures == 0


async def test_stopping_fails_deferred_asks(system: ActorSystem) -> None:
    ref = system.actor_of(Props(lambda: Forwarder({"a": asyncio.Event()})))
    pending = asyncio.ensure_future(ref.ask("a"))
    await asyncio.sleep(0)
    await ref.ask("seen")
    ref.stop()
    await ref.wait_stopped()
    with pytest.raises(ActorStopped):
        await pending


async def test_a_stopped_actor_is_freed_without_the_cyclic_collector(system: ActorSystem) -> None:
    import gc
    import weakref

    ref = system.actor_of(Props(Recorder))
    ref.tell("x")
    await ref.ask("y")
    ref.stop()
    await ref.wait_stopped()
    ref.tell("late")  # a dead letter: the stopped cell still answers as itself
    assert system.dead_letters.recent[-1].recipient == ref
    assert system.dead_letters.recent[-1].message == "late"
    cell = weakref.ref(ref._cell)
    gc.collect()
    gc.disable()  # freed by reference counting alone, or not at all
    try:
        del ref
        system.dead_letters.recent.clear()  # it holds the recipient's ref
        await settle()
        assert cell() is None
    finally:
        gc.enable()
