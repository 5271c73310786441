"""Typed configuration, and the one place that reads files and the environment."""

from inference_runtime.config.defaults import default_config
from inference_runtime.config.environment import Environment, read_environment, read_secret
from inference_runtime.config.settings import GatewayConfig, RuntimeConfig, load_config

__all__ = [
    "Environment",
    "GatewayConfig",
    "RuntimeConfig",
    "default_config",
    "load_config",
    "read_environment",
    "read_secret",
]
