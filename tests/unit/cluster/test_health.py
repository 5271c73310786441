"""ProgressWatch: busy with no step for the hang timeout is hung; anything else is not."""

from __future__ import annotations

from inference_runtime.cluster.health import ProgressWatch
from inference_runtime.engine import EngineStatistics
from inference_runtime.types import ReplicaState


def stats(
    steps: int, running: int = 1, state: ReplicaState = ReplicaState.HEALTHY
) -> EngineStatistics:
    return EngineStatistics(
        deployment="d", replica_id="d#0", state=state, waiting=0, running=running,
        steps=steps, context_restarts=0, reason=None,
    )  # fmt: skip


def test_busy_without_progress_for_the_timeout_is_hung() -> None:
    watch = ProgressWatch(hang_timeout_s=10)
    assert watch.observe(stats(5), 0.0) is None
    assert watch.observe(stats(5), 9.0) is None
    reason = watch.observe(stats(5), 10.5)
    assert reason is not None and "no engine step for 10 s" in reason


def test_progress_idleness_or_loading_reset_the_clock() -> None:
    watch = ProgressWatch(hang_timeout_s=10)
    watch.observe(stats(5), 0.0)
    assert watch.observe(stats(6), 9.0) is None  # a step finished
    assert watch.observe(stats(6), 18.0) is None
    assert watch.observe(stats(6, running=0), 30.0) is None  # idle: nothing to step
    assert watch.observe(stats(6), 35.0) is None
    assert watch.observe(stats(6, state=ReplicaState.STARTING), 60.0) is None  # loading
    assert watch.observe(stats(6), 65.0) is None
    watch.forget("d#0")
    assert watch.observe(stats(6), 100.0) is None
