"""How to build an actor: its factory and its mailbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inference_runtime.actors.actor import Actor

DEFAULT_MAILBOX_CAPACITY = 1024


@dataclass(frozen=True, slots=True)
class Props:
    """The recipe of an actor; a restart builds a fresh instance from the same recipe."""

    factory: Callable[[], Actor]
    """Zero-argument callable returning a new instance (a class, or a lambda closing over args)."""
    mailbox_capacity: int | None = DEFAULT_MAILBOX_CAPACITY
    """Most queued user messages; ``tell`` beyond it raises ``MailboxFull``. ``None``: unbounded."""
    throughput: int = 64
    """Messages handled back to back before the actor yields the event loop to others."""

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise TypeError("Props.factory must be a zero-argument callable returning an Actor")
        if self.mailbox_capacity is not None and self.mailbox_capacity < 1:
            raise ValueError("Props.mailbox_capacity must be >= 1, or None for unbounded")
        if self.throughput < 1:
            raise ValueError("Props.throughput must be >= 1")

    @classmethod
    def create(
        cls,
        factory: Callable[[], Actor],
        *,
        mailbox_capacity: int | None = DEFAULT_MAILBOX_CAPACITY,
        throughput: int = 64,
    ) -> Props:
        """The seed's spelling: ``Props.create(lambda: DpCoordinatorActor())``."""
        return cls(factory, mailbox_capacity=mailbox_capacity, throughput=throughput)
