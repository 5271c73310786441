"""What the deployment manager knows of each replica it runs: where, how, and what happened.

Plain records, mutated only by the manager; :meth:`ReplicaRecord.view` gives the admin API and
the metrics a plain-data copy.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from inference_runtime.actors import ActorRef
from inference_runtime.cluster.placement import Placement
from inference_runtime.types import Deployment

HISTORY = 50
"""Events kept per replica (the oldest are dropped)."""


class Phase(enum.Enum):
    """The manager's view of a replica (the coordinator keeps the routing view)."""

    PENDING = "pending"
    """Not placed yet: waiting for room on a node, or for its restart backoff."""
    RUNNING = "running"
    """Its engine actor is alive (loading or serving)."""
    DRAINING = "draining"
    """Takes nothing new; stopped once its requests finish."""
    FAILED = "failed"
    """Taken out by supervision or the health check; to be re-placed."""


def shape(deployment: Deployment) -> Deployment:
    """The part of a spec a replica runs: everything but the replica count (scaling does not
    restart replicas; any other change rolls them)."""
    return deployment if deployment.replicas == 1 else _with_replicas(deployment, 1)


def _with_replicas(deployment: Deployment, replicas: int) -> Deployment:
    data = deployment.to_dict()
    data["replicas"] = replicas
    return Deployment.from_dict(data)


@dataclass
class ReplicaRecord:
    replica_id: str
    deployment: str
    spec: Deployment
    """The spec it runs (``shape`` of the deployment when it was started)."""
    phase: Phase = Phase.PENDING
    engine: ActorRef | None = None
    placement: Placement | None = None
    last_placement: Placement | None = None
    """Where it ran before it failed (re-placement avoids it)."""
    failures: int = 0
    failures_in_a_row: int = 0
    moves: int = 0
    context_restarts: int = 0
    last_error: str | None = None
    not_before: float = 0.0
    """Monotonic time before which a failed replica is not re-placed (backoff)."""
    started: int = 0
    """Engine actors started for this replica (names stay unique)."""
    history: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def event(self, kind: str, detail: str = "") -> None:
        self.history.append((time.time(), kind, detail))

    def view(self, routing: Any = None) -> dict[str, Any]:
        """Plain data for the admin API; ``routing``: the coordinator's row, when known."""
        return {
            "id": self.replica_id,
            "phase": self.phase.value,
            "state": routing.state.value if routing is not None else None,
            "in_flight": routing.in_flight if routing is not None else 0,
            "placement": self.placement.describe() if self.placement else None,
            "node": self.placement.node_id if self.placement else None,
            "gpus": list(self.placement.gpu_indices) if self.placement else [],
            "restarts": max(self.context_restarts, routing.context_restarts if routing else 0),
            "failures": self.failures,
            "moves": self.moves,
            "last_error": self.last_error,
            "history": [
                {"at": round(at, 3), "event": kind, "detail": detail}
                for at, kind, detail in self.history
            ],
        }
