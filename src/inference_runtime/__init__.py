"""inference-runtime: model inference behind an OpenAI-compatible API, as a supervised actor system.

``import inference_runtime`` stays light: it never imports torch, transformers, Ray or vLLM.
"""

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.cluster import (
    DeploymentManagerActor,
    DpCoordinatorActor,
)
from inference_runtime.config import GatewayConfig, RuntimeConfig, load_config
from inference_runtime.engine import ContextActor, EngineCoreActor, WorkerActor
from inference_runtime.gateway import ApiGatewayActor, RequestFlow, spawn_gateway
from inference_runtime.metrics import MetricsActor
from inference_runtime.runtime import Runtime
from inference_runtime.types import Deployment
from inference_runtime.version import __version__

__all__ = [
    "ActorRef",
    "ActorSystem",
    "ApiGatewayActor",
    "ContextActor",
    "Deployment",
    "DeploymentManagerActor",
    "DpCoordinatorActor",
    "EngineCoreActor",
    "GatewayConfig",
    "MetricsActor",
    "Props",
    "RequestFlow",
    "Runtime",
    "RuntimeConfig",
    "WorkerActor",
    "__version__",
    "load_config",
    "spawn_gateway",
]
