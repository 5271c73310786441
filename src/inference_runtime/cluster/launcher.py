"""How a placed replica is launched: the props of the actor the manager spawns for it.

The reconciler places a replica, then spawns what its launcher's :meth:`ReplicaLauncher.props`
gives, under the manager, and registers that actor with the coordinator as the replica's engine.
By default (:class:`LocalLauncher`) that is the engine actor itself, in this process. The Ray
backend (``cluster.ray``) gives a proxy actor instead, which speaks the same messages and
forwards them to the engine running in a Ray actor on the node that placement chose.

Whatever it launches answers ``AddRequest``/``AbortRequest`` (or ``Embed``/``CancelEmbed``) and
``GetEngineStats``, reports ``EngineLoad`` to the coordinator, and tells its parent
``ReplicaDown`` (or fails: ``ChildFailed``) when the replica is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from inference_runtime.actors import ActorRef, Props
from inference_runtime.cluster.placement import Placement
from inference_runtime.engine import ModelRunner
from inference_runtime.engine.runtimes import engine_actor_class
from inference_runtime.types import Deployment

RunnerFactory = Callable[..., ModelRunner]
"""``factory(deployment, device=...)``: the replica's runner; ``device`` from its placement."""


class ReplicaLauncher(Protocol):
    """``replica_cpus`` (optional attribute): CPUs each replica reserves on its node, which
    placement then counts (the Ray backend's bundles); absent or 0: CPUs are not counted."""

    def props(
        self,
        deployment: Deployment,
        replica_id: str,
        placement: Placement,
        *,
        coordinator: ActorRef | None,
        runner_factory: RunnerFactory,
    ) -> Props:
        """The props of the actor that serves ``replica_id`` where ``placement`` says."""
        ...


def mailbox_capacity(deployment: Deployment) -> int:
    """Every admitted sequence may have an add and an abort queued at once."""
    serving = deployment.serving
    return 2 * (serving.max_concurrent + serving.queue_capacity) + 64


class LocalLauncher:
    """The engine actor itself, in this process, with a runner on ``placement.device``."""

    def props(
        self,
        deployment: Deployment,
        replica_id: str,
        placement: Placement,
        *,
        coordinator: ActorRef | None,
        runner_factory: RunnerFactory,
    ) -> Props:
        engine_class = engine_actor_class(deployment.runtime)
        device = placement.device
        return Props(
            lambda: engine_class(
                deployment,
                replica_id,
                coordinator=coordinator,
                runner_factory=lambda: runner_factory(deployment, device=device),
            ),
            mailbox_capacity=mailbox_capacity(deployment),
        )
