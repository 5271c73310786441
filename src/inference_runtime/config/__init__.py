"""Typed configuration, and the one place that reads files and the environment."""

from inference_runtime.config.defaults import default_config
from inference_runtime.config.environment import (
    Environment,
    read_environment,
    read_keys,
    read_secret,
)
from inference_runtime.config.settings import (
    AuthConfig,
    ClusterConfig,
    GatewayConfig,
    ManagerConfig,
    RuntimeConfig,
    StorageConfig,
    load_config,
)

__all__ = [
    "AuthConfig",
    "ClusterConfig",
    "Environment",
    "GatewayConfig",
    "ManagerConfig",
    "RuntimeConfig",
    "StorageConfig",
    "default_config",
    "load_config",
    "read_environment",
    "read_keys",
    "read_secret",
]
