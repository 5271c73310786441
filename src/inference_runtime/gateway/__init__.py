"""The OpenAI-compatible HTTP gateway, its request flows and its error mapping."""

from inference_runtime.config import GatewayConfig
from inference_runtime.gateway.actor import ApiGatewayActor, Drain, GetAddress, spawn_gateway
from inference_runtime.gateway.errors import to_http
from inference_runtime.gateway.request_flow import RequestFlow, RequestJob

__all__ = [
    "ApiGatewayActor",
    "Drain",
    "GatewayConfig",
    "GetAddress",
    "RequestFlow",
    "RequestJob",
    "spawn_gateway",
    "to_http",
]
