"""``Actor.direct_delivery``: an idle actor handles a message on the sender's call, with the
same guarantees as a queued one (order, one at a time, supervision, replied errors)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, PoisonPill, Props
from inference_runtime.errors import InferenceRuntimeError, RequestError


class Direct(Actor):
    direct_delivery: ClassVar[bool] = True
    replied_errors: ClassVar[tuple[type[BaseException], ...]] = (InferenceRuntimeError,)
    starts: ClassVar[int] = 0

    def __init__(self, log: list[Any], peer: list[ActorRef] | None = None) -> None:
        self.log = log
        self.peer = peer if peer is not None else []

    def pre_start(self) -> None:
        Direct.starts += 1

    def receive(self, message: Any) -> Any:
        self.log.append((message, self.context.sender))
        if isinstance(message, Exception):
            raise message
        if message == "echo-self":  # a tell to itself while handling: queued, not recursed
            self.context.self_ref.tell("from-self")
            self.log.append("after-self-tell")
        if message == "bounce" and self.peer:
            self.peer[0].tell("bounced", sender=self.context.self_ref)
        return message


class DirectAsync(Direct):
    async def receive(self, message: Any) -> Any:  # async: never on the sender's call
        self.log.append((message, None))
        return message


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def idle(system: ActorSystem, props: Props) -> ActorRef:
    ref = system.actor_of(props)
    await settle()  # started and parked on its empty mailbox
    return ref


async def test_idle_actor_handles_a_tell_on_the_call(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await idle(system, Props(lambda: Direct(log)))
    ref.tell("a")
    assert log == [("a", None)]  # before any yield
    assert ref.statistics().processed == 1


async def test_ask_is_answered_before_it_returns(system: ActorSystem) -> None:
    ref = await idle(system, Props(lambda: Direct([])))
    reply = ref.ask_future("q")
    assert reply.done() and reply.result() == "q"
    assert await ref.ask("again") == "again"


async def test_the_sender_is_seen(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await idle(system, Props(lambda: Direct(log)))
    other = await idle(system, Props(lambda: Direct([])))
    ref.tell("hi", sender=other)
    assert log == [("hi", other)]


async def test_a_tell_to_itself_is_queued_and_handled_after(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await idle(system, Props(lambda: Direct(log)))
    ref.tell("echo-self")
    assert log == [("echo-self", None), "after-self-tell"]  # not handled inside itself
    await settle()
    assert log[-1] == ("from-self", None)


async def test_a_cycle_does_not_reenter(system: ActorSystem) -> None:
    log_a: list[Any] = []
    log_b: list[Any] = []
    peer_of_b: list[ActorRef] = []
    b = await idle(system, Props(lambda: Direct(log_b, peer_of_b)))

    class Relay(Direct):
        def receive(self, message: Any) -> Any:
            log_a.append(("relay", message))
            if message == "go":
                b.tell("bounce")  # b runs now and tells us back: that one must be queued
                log_a.append("relay-done")
            return None

    r = await idle(system, Props(lambda: Relay([])))
    peer_of_b.append(r)
    r.tell("go")
    assert log_a == [("relay", "go"), "relay-done"]
    await settle()
    assert log_a[-1] == ("relay", "bounced")
    assert log_b[0][0] == "bounce"


async def test_a_busy_actor_queues_and_keeps_order(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = system.actor_of(Props(lambda: Direct(log)))
    ref.tell(1)  # not started yet: queued
    ref.tell(2)
    assert log == []
    await settle()
    ref.tell(3)  # idle again: on the call
    assert [m for m, _ in log] == [1, 2, 3]


async def test_a_failure_goes_to_the_supervisor(system: ActorSystem) -> None:
    log: list[Any] = []
    Direct.starts = 0
    ref = await idle(system, Props(lambda: Direct(log)))
    boom = RuntimeError("boom")
    reply = ref.ask_future(boom)
    assert reply.done() and reply.exception() is boom
    ref.tell("next")  # the failure is not handled yet: queued behind it, not on the call
    assert [m for m, _ in log] == [boom]
    await settle(20)
    assert Direct.starts == 2  # restarted by the default strategy
    assert [m for m, _ in log][-1] == "next"
    assert ref.statistics().restarts == 1


async def test_replied_errors_answer_and_keep_the_actor(system: ActorSystem) -> None:
    Direct.starts = 0
    ref = await idle(system, Props(lambda: Direct([])))
    with pytest.raises(RequestError):
        await ref.ask(RequestError("bad"))
    ref.tell(RequestError("from a tell"))  # logged and dropped
    await settle()
    assert Direct.starts == 1
    assert await ref.ask("still") == "still"


async def test_async_receive_is_never_direct(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await idle(system, Props(lambda: DirectAsync(log)))
    ref.tell("x")
    assert log == []
    await settle()
    assert log == [("x", None)]


async def test_poison_pill_still_stops_it(system: ActorSystem) -> None:
    ref = await idle(system, Props(lambda: Direct([])))
    ref.tell(PoisonPill())
    await asyncio.wait_for(ref.wait_stopped(), 2)
    assert not ref.is_alive
