"""Local engine cores: continuous batching over a ModelRunner, under two-tier supervision."""

from inference_runtime.engine.core import AbortRequest, AddRequest, Admitted, EngineCoreActor
from inference_runtime.engine.replica import (
    EngineStatistics,
    GetEngineStats,
    ReplicaActor,
    ReplicaDown,
)
from inference_runtime.engine.runner import (
    ModelRunner,
    RunnerInfo,
    ScheduledBatch,
    ScheduledSequence,
    TokenOutput,
)
from inference_runtime.engine.runtimes import create_runner
from inference_runtime.engine.scheduler import Scheduler
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.engine.worker import ContextActor, WorkerActor

__all__ = [
    "AbortRequest",
    "AddRequest",
    "Admitted",
    "ContextActor",
    "EngineCoreActor",
    "EngineStatistics",
    "GetEngineStats",
    "ModelRunner",
    "ReplicaActor",
    "ReplicaDown",
    "RunnerInfo",
    "ScheduledBatch",
    "ScheduledSequence",
    "Scheduler",
    "SequenceSink",
    "TokenOutput",
    "WorkerActor",
    "create_runner",
]
