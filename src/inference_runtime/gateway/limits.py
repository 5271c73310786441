"""Request limits checked at the edge: messages per request, and a deployment's max_tokens cap
(the body size limit is aiohttp's ``client_max_size`` plus the Content-Length check)."""

from __future__ import annotations

import msgspec

from inference_runtime.config import GatewayConfig
from inference_runtime.errors import RequestError
from inference_runtime.types import Deployment
from inference_runtime.types.requests import SamplingParams

BUDGETED_MAX_TOKENS = 4096
"""On a deployment with a budget and no ``serving.max_tokens``, a request that sets no
``max_tokens`` is held to this many, so that its reservation is a true worst case."""


def apply_limits(
    sampling: SamplingParams, *, deployment: Deployment, messages: int, gateway: GatewayConfig
) -> SamplingParams:
    """Refuse what is over a limit; a request with no max_tokens gets the deployment's cap."""
    if messages > gateway.max_messages:
        raise RequestError(
            f"messages: {messages} messages is over the limit of {gateway.max_messages}",
            param="messages",
        )
    cap = deployment.serving.max_tokens
    if cap is None:
        if deployment.budget is not None and sampling.max_tokens is None:
            # the budget reserves the worst case: without a bound on the completion there is
            # none (a local model would run to its context, a provider to its own default)
            return msgspec.structs.replace(sampling, max_tokens=BUDGETED_MAX_TOKENS)
        return sampling
    if sampling.max_tokens is None:
        return msgspec.structs.replace(sampling, max_tokens=cap)
    if sampling.max_tokens > cap:
        raise RequestError(
            f"max_tokens: {sampling.max_tokens} is over the limit of {cap} for model "
            f"{deployment.name!r}",
            param="max_tokens",
        )
    return sampling
