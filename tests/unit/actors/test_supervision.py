"""Supervision: directives, restart windows, escalation, all-for-one, backoff."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import (
    Actor,
    ActorInitializationError,
    ActorStopped,
    ActorSystem,
    AllForOneStrategy,
    Backoff,
    ChildFailed,
    Directive,
    OneForOneStrategy,
    Props,
    SupervisorStrategy,
)
from inference_runtime.testing import ManualClock


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Counter(Actor):
    """State that a restart resets; fails on request."""

    instances = 0

    def __init__(self, events: list[Any] | None = None) -> None:
        Counter.instances += 1
        self.count = 0
        self.events = events if events is not None else []

    def receive(self, message: Any) -> Any:
        if isinstance(message, BaseException):
            raise message
        self.count += 1
        return self.count

    def pre_restart(self, error: BaseException, message: object) -> None:
        self.events.append(("pre_restart", type(error).__name__, type(message).__name__))

    def post_restart(self, error: BaseException) -> None:
        self.events.append(("post_restart", type(error).__name__))


class Parent(Actor):
    """Supervises children with a given strategy; records what it is told."""

    def __init__(
        self, strategy: SupervisorStrategy, child_props: dict[str, Props], told: list[Any]
    ) -> None:
        self.strategy = strategy
        self.child_props = child_props
        self.told = told

    def pre_start(self) -> None:
        for name, props in self.child_props.items():
            self.context.spawn(props, name)

    def receive(self, message: Any) -> Any:
        if message == "children":
            return {ref.name: ref for ref in self.context.children}
        self.told.append(message)
        if isinstance(message, ChildFailed) and isinstance(message.error, Fatal):
            raise message.error  # escalate
        return None

    def supervisor_strategy(self) -> SupervisorStrategy:
        return self.strategy


async def spawn_parent(
    system: ActorSystem,
    strategy: SupervisorStrategy,
    children: dict[str, Props],
    told: list[Any],
    name: str = "parent",
) -> tuple[Any, dict[str, Any]]:
    parent = system.actor_of(Props(lambda: Parent(strategy, children, told)), name)
    refs = await parent.ask("children")
    return parent, refs


@pytest.fixture
async def clock_system() -> Any:
    clock = ManualClock()
    system = ActorSystem.create("sup", clock=clock)
    yield system, clock
    await system.shutdown()


async def test_restart_resets_state_and_keeps_mailbox(clock_system: Any) -> None:
    system, _ = clock_system
    events: list[Any] = []
    ref = system.actor_of(Props(lambda: Counter(events)), "c")
    assert await ref.ask("+") == 1
    assert await ref.ask("+") == 2
    failing = asyncio.ensure_future(ref.ask(Boom("x")))
    pending = [asyncio.ensure_future(ref.ask("+")) for _ in range(3)]
    with pytest.raises(Boom):
        await failing
    # the asks queued behind the failure are answered by the fresh instance
    assert [await p for p in pending] == [1, 2, 3]
    assert events == [("pre_restart", "Boom", "Boom"), ("post_restart", "Boom")]
    assert ref.statistics().restarts == 1


async def test_hooks_see_error_and_message(clock_system: Any) -> None:
    system, _ = clock_system
    events: list[Any] = []

    class Keeper(Counter):
        def pre_restart(self, error: BaseException, message: object) -> None:
            events.append(("pre_restart", repr(error), repr(message)))

    ref = system.actor_of(Props(lambda: Keeper(events)))
    err = Boom("why")
    with pytest.raises(Boom):
        await ref.ask(err)
    await ref.ask("+")
    assert events[0] == ("pre_restart", repr(err), repr(err))
    assert events[1] == ("post_restart", "Boom")


async def test_resume_keeps_state(clock_system: Any) -> None:
    system, _ = clock_system
    told: list[Any] = []
    strategy = OneForOneStrategy(decider=lambda e: Directive.RESUME)
    _, children = await spawn_parent(system, strategy, {"c": Props(Counter)}, told)
    child = children["c"]
    assert await child.ask("+") == 1
    with pytest.raises(Boom):
        await child.ask(Boom())
    assert await child.ask("+") == 2
    assert child.statistics().restarts == 0


async def test_stop_directive_tells_parent(clock_system: Any) -> None:
    system, _ = clock_system
    told: list[Any] = []
    strategy = OneForOneStrategy(decider=lambda e: Directive.STOP)
    _, children = await spawn_parent(system, strategy, {"c": Props(Counter)}, told)
    child = children["c"]
    child.tell(Boom("bye"))
    await child.wait_stopped()
    await settle()
    assert len(told) == 1 and isinstance(told[0], ChildFailed)
    assert told[0].ref == child and not told[0].restart_limit_exceeded
    assert isinstance(told[0].error, Boom)


async def test_restart_window_with_manual_clock(clock_system: Any) -> None:
    system, clock = clock_system
    told: list[Any] = []
    strategy = OneForOneStrategy(max_restarts=3, within=60)
    _, children = await spawn_parent(system, strategy, {"c": Props(Counter)}, told)
    child = children["c"]
    for _ in range(3):
        clock.advance(10)
        with pytest.raises(Boom):
            await child.ask(Boom())
    assert child.statistics().restarts == 3
    clock.advance(29)  # t=59: the first restart (t=10) is still inside the window
    with pytest.raises(Boom):
        await child.ask(Boom())
    await child.wait_stopped()
    await settle()
    assert child.statistics().restarts == 3
    assert isinstance(told[-1], ChildFailed) and told[-1].restart_limit_exceeded


async def test_old_restarts_leave_the_window(clock_system: Any) -> None:
    system, clock = clock_system
    told: list[Any] = []
    strategy = OneForOneStrategy(max_restarts=3, within=60)
    _, children = await spawn_parent(system, strategy, {"c": Props(Counter)}, told)
    child = children["c"]
    for _ in range(3):
        with pytest.raises(Boom):
            await child.ask(Boom())
    clock.advance(60)  # all three restarts (t=0) are now out of (t-60, t]
    for _ in range(3):
        with pytest.raises(Boom):
            await child.ask(Boom())
    assert child.is_alive
    assert child.statistics().restarts == 6
    assert told == []


async def test_failure_in_pre_start_stops_the_actor(clock_system: Any) -> None:
    system, _ = clock_system
    told: list[Any] = []
    started: list[int] = []

    class Broken(Actor):
        def pre_start(self) -> None:
            started.append(1)
            raise Boom("cannot start")

        def receive(self, message: Any) -> None:
            pass

    strategy = OneForOneStrategy()
    parent = system.actor_of(Props(lambda: Parent(strategy, {}, told)), "p")
    await parent.ask("children")
    child = None

    class Spawner(Actor):
        def receive(self, message: Any) -> Any:
            return self.context.spawn(Props(Broken), "broken")

    spawner = system.actor_of(Props(Spawner))
    child = await spawner.ask("go")
    with pytest.raises(ActorStopped):
        await child.ask("hello")
    await child.wait_stopped()
    assert started == [1]  # stopped, not restarted in a loop
    stats = system.statistics()
    assert stats.restarts == 0


async def test_init_failure_reported_to_parent(clock_system: Any) -> None:
    system, _ = clock_system
    told: list[Any] = []

    class Broken(Actor):
        def __init__(self) -> None:
            raise Boom("constructor")

        def receive(self, message: Any) -> None:
            pass

    _, children = await spawn_parent(system, OneForOneStrategy(), {"b": Props(Broken)}, told)
    await children["b"].wait_stopped()
    await settle()
    assert isinstance(told[0], ChildFailed)
    assert isinstance(told[0].error, ActorInitializationError)
    assert isinstance(told[0].error.__cause__, Boom)


async def test_restart_when_init_error_should_restart(clock_system: Any) -> None:
    system, _ = clock_system
    attempts: list[int] = []

    class Flaky(Actor):
        def pre_start(self) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise Boom("not yet")

        def receive(self, message: Any) -> str:
            return "up"

    def decider(error: BaseException) -> Directive:
        return Directive.RESTART

    told: list[Any] = []
    _, children = await spawn_parent(
        system, OneForOneStrategy(decider=decider), {"f": Props(Flaky)}, told
    )
    assert await children["f"].ask("?") == "up"
    assert len(attempts) == 3


async def test_escalation_restarts_the_parent_and_its_children(clock_system: Any) -> None:
    system, _ = clock_system
    grand_told: list[Any] = []
    child_told: list[Any] = []
    escalate = OneForOneStrategy(decider=lambda e: Directive.ESCALATE)
    child_props = Props(lambda: Parent(escalate, {"leaf": Props(Counter)}, child_told))
    _, children = await spawn_parent(system, OneForOneStrategy(), {"mid": child_props}, grand_told)
    mid = children["mid"]
    leaf = (await mid.ask("children"))["leaf"]
    assert await leaf.ask("+") == 1
    with pytest.raises(Boom):
        await leaf.ask(Boom("deep"))
    await leaf.wait_stopped()  # the restart of mid stopped its old children
    new_leaf = (await mid.ask("children"))["leaf"]
    assert new_leaf != leaf
    assert await new_leaf.ask("+") == 1
    assert mid.statistics().restarts == 1


async def test_escalated_child_resumes_when_parent_resumes(clock_system: Any) -> None:
    system, _ = clock_system
    escalate = OneForOneStrategy(decider=lambda e: Directive.ESCALATE)
    resume = OneForOneStrategy(decider=lambda e: Directive.RESUME)
    told: list[Any] = []
    mid_props = Props(lambda: Parent(escalate, {"leaf": Props(Counter)}, told))
    _, children = await spawn_parent(system, resume, {"mid": mid_props}, [])
    leaf = (await children["mid"].ask("children"))["leaf"]
    assert await leaf.ask("+") == 1
    with pytest.raises(Boom):
        await leaf.ask(Boom())
    assert await leaf.ask("+") == 2  # same instance, resumed


async def test_escalation_to_the_root_terminates_the_system() -> None:
    escalate = OneForOneStrategy(decider=lambda e: Directive.ESCALATE)
    system = ActorSystem.create("root", guardian_strategy=escalate)
    ref = system.actor_of(Props(Counter), "top")
    other = system.actor_of(Props(Counter), "other")
    ref.tell(Fatal("everything is lost"))
    await asyncio.wait_for(system.when_terminated(), 5)
    assert isinstance(system.termination_cause, Fatal)
    assert not ref.is_alive and not other.is_alive
    assert system.statistics().actors_alive == 0
    await system.shutdown()  # idempotent


async def test_limit_exceeded_then_parent_escalates(clock_system: Any) -> None:
    system, _ = clock_system
    grand_told: list[Any] = []
    mid_props = Props(
        lambda: Parent(OneForOneStrategy(max_restarts=1), {"leaf": Props(Counter)}, [])
    )

    class Escalator(Parent):
        pass

    strategy = OneForOneStrategy(decider=lambda e: Directive.STOP)
    _, children = await spawn_parent(system, strategy, {"mid": mid_props}, grand_told)
    mid = children["mid"]
    leaf = (await mid.ask("children"))["leaf"]
    with pytest.raises(Fatal):
        await leaf.ask(Fatal())
    leaf2 = leaf
    with pytest.raises(Fatal):
        await leaf2.ask(Fatal())
    # leaf exceeded 1 restart; mid got ChildFailed(Fatal) and re-raised it (escalation);
    # the grandparent's strategy stops mid.
    await mid.wait_stopped()
    await settle()
    assert isinstance(grand_told[-1], ChildFailed)
    assert grand_told[-1].ref == mid
    assert isinstance(grand_told[-1].error, Fatal)


async def test_all_for_one_restarts_every_child(clock_system: Any) -> None:
    system, _ = clock_system
    strategy = AllForOneStrategy(max_restarts=5)
    _, children = await spawn_parent(
        system, strategy, {"a": Props(Counter), "b": Props(Counter), "c": Props(Counter)}, []
    )
    for ref in children.values():
        assert await ref.ask("+") == 1
    with pytest.raises(Boom):
        await children["a"].ask(Boom())
    await settle()
    for ref in children.values():
        assert await ref.ask("+") == 1, ref  # fresh instances everywhere
        assert ref.statistics().restarts == 1


async def test_all_for_one_stop_stops_every_child(clock_system: Any) -> None:
    system, _ = clock_system
    strategy = AllForOneStrategy(decider=lambda e: Directive.STOP)
    _, children = await spawn_parent(
        system, strategy, {"a": Props(Counter), "b": Props(Counter)}, []
    )
    children["a"].tell(Boom())
    for ref in children.values():
        await ref.wait_stopped()


async def test_backoff_delays_restart_on_the_clock(clock_system: Any) -> None:
    system, clock = clock_system
    strategy = OneForOneStrategy(backoff=Backoff(min_s=1.0, max_s=4.0, multiplier=2.0))
    _, children = await spawn_parent(system, strategy, {"c": Props(Counter)}, [])
    child = children["c"]
    with pytest.raises(Boom):
        await child.ask(Boom())
    waiting = asyncio.ensure_future(child.ask("+"))
    await settle()
    assert not waiting.done()  # suspended for the backoff
    clock.advance(0.5)
    await settle()
    assert not waiting.done()
    clock.advance(0.5)
    assert await waiting == 1
    with pytest.raises(Boom):
        await child.ask(Boom())
    waiting = asyncio.ensure_future(child.ask("+"))
    clock.advance(1.5)
    await settle()
    assert not waiting.done()  # second restart waits 2 s
    clock.advance(0.5)
    assert await waiting == 1


def test_backoff_delays() -> None:
    backoff = Backoff(min_s=0.5, max_s=3.0, multiplier=2.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        Backoff(min_s=2, max_s=1)


def test_strategy_validation() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        OneForOneStrategy(max_restarts=-1)
    with pytest.raises(ValueError, match="within"):
        OneForOneStrategy(within=0)


async def test_replied_errors_do_not_fail_the_actor(clock_system: Any) -> None:
    system, _ = clock_system

    class Lookup(Counter):
        replied_errors = (KeyError,)

    ref = system.actor_of(Props(Lookup))
    assert await ref.ask("+") == 1
    with pytest.raises(KeyError):
        await ref.ask(KeyError("missing"))
    ref.tell(KeyError("from a tell"))
    assert await ref.ask("+") == 2  # state kept: not a failure
    assert ref.statistics().restarts == 0


async def test_decider_failure_escalates(clock_system: Any) -> None:
    system, _ = clock_system

    def broken(error: BaseException) -> Directive:
        raise RuntimeError("decider bug")

    told: list[Any] = []
    parent, children = await spawn_parent(
        system, OneForOneStrategy(decider=broken), {"c": Props(Counter)}, told
    )
    with pytest.raises(Boom):
        await children["c"].ask(Boom())
    await children["c"].wait_stopped()  # parent restarted by the guardian: children stopped
    assert parent.statistics().restarts == 1
