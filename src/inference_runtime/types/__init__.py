"""Plain data shared by every layer: deployments, requests, token chunks, usage."""

from inference_runtime.types.chunks import TokenChunk, Usage, WordRun
from inference_runtime.types.deployment import (
    RUNTIMES,
    Budget,
    Deployment,
    Pricing,
    ServingConfig,
)
from inference_runtime.types.replica import EngineLoad, ReplicaState
from inference_runtime.types.requests import ChatMessage, EngineRequest, SamplingParams
from inference_runtime.types.secret import Secret

__all__ = [
    "RUNTIMES",
    "Budget",
    "ChatMessage",
    "Deployment",
    "EngineLoad",
    "EngineRequest",
    "Pricing",
    "ReplicaState",
    "SamplingParams",
    "Secret",
    "ServingConfig",
    "TokenChunk",
    "Usage",
    "WordRun",
]
