"""Hung-engine detection: a replica that has work but finishes no step is hung.

A ping is not enough: the engine actor keeps answering messages while its runner is stuck in a
forward on another thread (or a device that never returns). So the manager compares the engine's
step counter between health checks instead.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from inference_runtime.actors import ActorRef
from inference_runtime.engine import EngineStatistics
from inference_runtime.engine.replica import StepHung
from inference_runtime.errors import InferenceRuntimeError
from inference_runtime.types import ReplicaState


@dataclass
class _Progress:
    steps: int
    since: float
    """When ``steps`` last changed, or when the replica last had no work."""


class ProgressWatch:
    """Per replica: the last step count and since when it has not moved while work waited."""

    def __init__(self, hang_timeout_s: float) -> None:
        self.hang_timeout_s = hang_timeout_s
        self._seen: dict[str, _Progress] = {}

    def observe(self, stats: EngineStatistics, now: float) -> str | None:
        """Record a health check's answer; returns why the replica is hung, or None."""
        seen = self._seen.get(stats.replica_id)
        # a replica still loading its weights (STARTING) has work queued but is not hung
        busy = stats.state is ReplicaState.HEALTHY and stats.waiting + stats.running > 0
        if seen is None or seen.steps != stats.steps or not busy:
            self._seen[stats.replica_id] = _Progress(stats.steps, now)
            return None
        stalled = now - seen.since
        if stalled < self.hang_timeout_s:
            return None
        return (
            f"hung: no engine step for {stalled:.0f} s with {stats.running} running and "
            f"{stats.waiting} waiting"
        )

    def forget(self, replica_id: str) -> None:
        self._seen.pop(replica_id, None)


async def tell_hung(engine: ActorRef, reason: str, *, timeout: float) -> None:
    """Before a hung replica is taken out: its engine fails the requests of the step that never
    returned as suspects of it (``StepHung``), so that the one that hangs replicas is not retried
    onto the next replica with the others. An engine that cannot answer is stopped anyway."""
    with contextlib.suppress(InferenceRuntimeError):
        await engine.ask(StepHung(reason), timeout=timeout)
