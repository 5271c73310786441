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

    We wait on a plain future that the answer completes, never on the answer itself, so that
    our cancellation cannot cancel it (what ``asyncio.shield`` does, with no task); an answer
    given on the call (the coordinator was idle) needs no waiting at all."""
    reply: asyncio.Future[RouteLease] = coordinator.ask_future(route)
    if reply.done():
        return reply.result()
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reply.add_done_callback(functools.partial(_wake, waiter))
    try:
        await waiter
    except asyncio.CancelledError:

        def give_back(done: asyncio.Future[RouteLease]) -> None:
            if not done.cancelled() and done.exception() is None:
                got = done.result()
                tell_reliably(coordinator, Release(got.deployment, got.replica_id))

        reply.add_done_callback(give_back)
        raise
    return reply.result()


def _wake(waiter: asyncio.Future[None], _ask: object) -> None:
    if not waiter.done():
        waiter.set_result(None)
