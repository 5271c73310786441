"""Messages the kernel itself delivers to actors, and the dead-letter record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inference_runtime.actors.ref import ActorRef


@dataclass(frozen=True, slots=True)
class Terminated:
    """Sent to every watcher when the watched actor has stopped (or was already dead)."""

    ref: ActorRef


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Sent to a parent when a child was stopped because of a failure.

    That is: the parent's strategy said ``Stop``, or the child exceeded ``max_restarts`` within the
    window. The parent may raise ``error`` from ``receive`` to escalate it to its own parent.
    """

    ref: ActorRef
    error: BaseException
    restart_limit_exceeded: bool


@dataclass(frozen=True, slots=True)
class PoisonPill:
    """Stops the receiving actor once the messages queued before it are processed."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be delivered: its recipient was stopped, or stopped first."""

    message: object
    recipient: ActorRef
    sender: ActorRef | None
