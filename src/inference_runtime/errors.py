"""The error tree of inference-runtime.

Every error the runtime raises on purpose derives from :class:`InferenceRuntimeError`. Each class
says whether trying again can help (``retryable``): a retryable error is about the moment (a full
queue, a stopped actor that will be replaced, a timeout), a final one is about the request or the
program (a bad name, an actor that cannot even start).

::

    InferenceRuntimeError                      retryable?
    └── ActorError                             (the actor kernel)
        ├── InvalidActorName                   final    a name that breaks the naming rules
        ├── ActorNameTaken                     final    a sibling already has that name
        ├── MailboxFull                        retryable  a bounded mailbox is at capacity
        ├── ActorStopped                       retryable  the actor stopped before it answered
        ├── AskTimeout                         retryable  no answer within the ask's timeout
        └── ActorInitializationError           final    constructing or starting an actor failed

Later layers (engine, remote, gateway) hang their errors under the same root, and the gateway maps
the tree to HTTP statuses in exactly one place.
"""

from __future__ import annotations

from typing import ClassVar


class InferenceRuntimeError(Exception):
    """Root of every error the runtime raises on purpose."""

    retryable: ClassVar[bool] = False
    """True when the same request may succeed if tried again (later, or elsewhere)."""


class ActorError(InferenceRuntimeError):
    """An error of the actor kernel."""


class InvalidActorName(ActorError, ValueError):
    """An actor name that is empty, contains ``/``, or starts with the reserved ``$``."""


class ActorNameTaken(ActorError, ValueError):
    """Another live child of the same parent already has this name."""


class MailboxFull(ActorError):
    """``tell`` or ``ask`` on a bounded mailbox that is at capacity."""

    retryable = True

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(f"mailbox of {path} is full ({capacity} messages)")
        self.path = path
        self.capacity = capacity


class ActorStopped(ActorError):
    """The actor stopped (or was never alive) before it answered."""

    retryable = True

    def __init__(self, path: str) -> None:
        super().__init__(f"actor {path} is stopped")
        self.path = path


class AskTimeout(ActorError, TimeoutError):
    """No answer arrived within the ask's timeout."""

    retryable = True

    def __init__(self, path: str, timeout: float, message: object) -> None:
        super().__init__(
            f"ask to {path} timed out after {timeout:g}s (message {type(message).__name__})"
        )
        self.path = path
        self.timeout = timeout


class ActorInitializationError(ActorError):
    """Creating the actor instance or running its ``pre_start``/``post_restart`` failed.

    The original exception is the ``__cause__``. The default supervisor decider stops an actor that
    fails this way instead of restarting it in a loop.
    """

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"actor {path} failed to start: {cause!r}")
        self.path = path
        self.__cause__ = cause
