"""Two-tier supervision: a stable ``WorkerActor`` over a restartable ``ContextActor``.

The context owns the runner's device state. A poisoned context (or one out of memory) is
restarted, which rebuilds the runner on the same device, at most 3 times within 60 s; the next
failure stops it, and the worker escalates to its engine core, which takes the replica out.
``Unrecoverable`` escalates at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ChildFailed,
    Directive,
    OneForOneStrategy,
    Props,
    SupervisorStrategy,
)
from inference_runtime.engine.runner import ModelRunner
from inference_runtime.errors import (
    ActorInitializationError,
    ContextPoisoned,
    OutOfMemory,
    Unrecoverable,
)


@dataclass(frozen=True, slots=True)
class ContextReady:
    """To the engine core: the runner is loaded (``restarted``: after a rebuild)."""

    runner: ModelRunner
    context: ActorRef
    restarted: bool


@dataclass(frozen=True, slots=True)
class Poisoned:
    """To the context, from the engine core: the runner failed; fail with it."""

    error: BaseException


def context_decider(error: BaseException) -> Directive:
    """ContextPoisoned and OutOfMemory restart the context; Unrecoverable escalates; a context
    that cannot load escalates unless the device itself was the problem."""
    if isinstance(error, ActorInitializationError):
        error = error.__cause__ or error
        if isinstance(error, ContextPoisoned | OutOfMemory):
            return Directive.RESTART
        return Directive.ESCALATE
    if isinstance(error, ContextPoisoned | OutOfMemory):
        return Directive.RESTART
    if isinstance(error, Unrecoverable) or not isinstance(error, Exception):
        return Directive.ESCALATE
    return Directive.RESTART


def context_strategy(*, max_restarts: int = 3, within: float = 60.0) -> SupervisorStrategy:
    return OneForOneStrategy(max_restarts=max_restarts, within=within, decider=context_decider)


class ContextActor(Actor):
    """Owns the runner's device state: load, rebuild after a restart, close at the end."""

    def __init__(self, runner: ModelRunner, engine: ActorRef) -> None:
        self.runner = runner
        self.engine = engine

    async def pre_start(self) -> None:
        await self.runner.load()
        self.engine.tell(ContextReady(self.runner, self.context.self_ref, restarted=False))

    def pre_restart(self, error: BaseException, message: object) -> None:
        """Keep the runner: the fresh instance rebuilds it on the same device."""

    async def post_restart(self, error: BaseException) -> None:
        await self.runner.rebuild()
        self.engine.tell(ContextReady(self.runner, self.context.self_ref, restarted=True))

    async def post_stop(self) -> None:
        await self.runner.close()

    def receive(self, message: Any) -> None:
        if isinstance(message, Poisoned):
            raise message.error


class WorkerActor(Actor):
    """The stable parent: applies the context strategy, escalates what it cannot fix."""

    def __init__(self, context_props: Props, strategy: SupervisorStrategy) -> None:
        self.context_props = context_props
        self.strategy = strategy

    def pre_start(self) -> None:
        self.context.spawn(self.context_props, "ctx")

    def receive(self, message: Any) -> None:
        if isinstance(message, ChildFailed):
            raise message.error  # escalate: the engine core takes the replica out

    def supervisor_strategy(self) -> SupervisorStrategy:
        return self.strategy
