"""Route leases: a replica handed out by the coordinator must be released exactly once, even
when the request is cancelled mid-ask or a mailbox is full."""

from __future__ import annotations

import asyncio
import functools

from inference_runtime.actors import ActorRef
from inference_runtime.cluster import Release, Route, RouteLease
from inference_runtime.errors import MailboxFull


def tell_reliably(ref: ActorRef, message: object, *, delay: float = 0.01) -> None:
    """Tell a message that must not be lost (a release, an abort): a full mailbox is retried
    shortly instead of raising; a stopped actor gets it as a dead letter, as any tell."""
    try:
        ref.tell(message)
    except MailboxFull:
        asyncio.get_running_loop().call_later(delay, tell_reliably, ref, message)


async def acquire_lease(coordinator: ActorRef, route: Route) -> RouteLease:
    """Ask for a replica. If we are cancelled while the coordinator answers, the lease it hands
    out anyway (it counted the request in flight at once) is given back when it arrives.

    The ask runs in its own task, which our cancellation does not reach; we wait on a plain
    future that the task completes (what ``asyncio.shield`` does, with one object less)."""
    loop = asyncio.get_running_loop()
    ask: asyncio.Task[RouteLease] = loop.create_task(coordinator.ask(route))
    waiter: asyncio.Future[None] = loop.create_future()
    ask.add_done_callback(functools.partial(_wake, waiter))
    try:
        await waiter
    except asyncio.CancelledError:

        def give_back(done: asyncio.Task[RouteLease]) -> None:
            if not done.cancelled() and done.exception() is None:
                got = done.result()
                tell_reliably(coordinator, Release(got.deployment, got.replica_id))

        ask.add_done_callback(give_back)
        raise
    return ask.result()


def _wake(waiter: asyncio.Future[None], _ask: object) -> None:
    if not waiter.done():
        waiter.set_result(None)
