"""What an engine replica reports about itself (engines sit below the coordinator and metrics,
so the report is plain data here)."""

from __future__ import annotations

import enum

import msgspec


class ReplicaState(enum.Enum):
    STARTING = "starting"
    """Placed, loading its model; not routable yet."""
    HEALTHY = "healthy"
    """Takes requests."""
    DRAINING = "draining"
    """Finishes what it has, takes nothing new."""
    FAILED = "failed"
    """Taken out by supervision; never routed to."""


class EngineLoad(msgspec.Struct, frozen=True, kw_only=True):
    """A replica's load and health, sent to the coordinator whenever it changes."""

    deployment: str
    replica_id: str
    state: ReplicaState
    waiting: int = 0
    """Sequences queued, not yet running."""
    running: int = 0
    """Sequences in the running batch."""
    context_restarts: int = 0
    """Times the model context was rebuilt since the replica started."""
    reason: str | None = None
    """Why the replica is in this state (for FAILED: the last error)."""
