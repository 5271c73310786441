"""The actor kernel: supervised asyncio actors, Akka-style, small and fast.

It knows nothing of inference; every other layer of the runtime is built from it.
"""

from inference_runtime.actors.actor import Actor, ActorContext
from inference_runtime.actors.clock import Cancellable, Clock, LoopClock
from inference_runtime.actors.deferred import Deferred
from inference_runtime.actors.messages import ChildFailed, DeadLetter, PoisonPill, Terminated
from inference_runtime.actors.props import DEFAULT_MAILBOX_CAPACITY, Props
from inference_runtime.actors.ref import DEFAULT_ASK_TIMEOUT, ActorRef, ActorStatistics
from inference_runtime.actors.supervision import (
    DEFAULT_STRATEGY,
    AllForOneStrategy,
    Backoff,
    Decider,
    Directive,
    OneForOneStrategy,
    RestartWindow,
    SupervisorStrategy,
    default_decider,
)
from inference_runtime.actors.system import ActorSystem, DeadLetters, SystemStatistics
from inference_runtime.actors.timers import TimerHandle
from inference_runtime.errors import (
    ActorError,
    ActorInitializationError,
    ActorNameTaken,
    ActorStopped,
    AskTimeout,
    InvalidActorName,
    MailboxFull,
)

__all__ = [
    "DEFAULT_ASK_TIMEOUT",
    "DEFAULT_MAILBOX_CAPACITY",
    "DEFAULT_STRATEGY",
    "Actor",
    "ActorContext",
    "ActorError",
    "ActorInitializationError",
    "ActorNameTaken",
    "ActorRef",
    "ActorStatistics",
    "ActorStopped",
    "ActorSystem",
    "AllForOneStrategy",
    "AskTimeout",
    "Backoff",
    "Cancellable",
    "ChildFailed",
    "Clock",
    "DeadLetter",
    "DeadLetters",
    "Decider",
    "Deferred",
    "Directive",
    "InvalidActorName",
    "LoopClock",
    "MailboxFull",
    "OneForOneStrategy",
    "PoisonPill",
    "Props",
    "RestartWindow",
    "SupervisorStrategy",
    "SystemStatistics",
    "Terminated",
    "TimerHandle",
    "default_decider",
]
