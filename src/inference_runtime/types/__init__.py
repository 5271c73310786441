"""Plain data shared by every layer: deployments, requests, token chunks, usage."""

from inference_runtime.types.chunks import TokenChunk, Usage
from inference_runtime.types.deployment import (
    RUNTIMES,
    Budget,
    Deployment,
    Pricing,
    ServingConfig,
)
from inference_runtime.types.replica import EngineLoad, ReplicaState
from inference_runtime.types.requests import ChatMessage, EngineRequest, SamplingParams

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
    "ServingConfig",
    "TokenChunk",
    "Usage",
]
