"""The edge's request limits: a deployment's max_tokens cap, and the bound a budget needs."""

from __future__ import annotations


def test_a_budgeted_deployment_bounds_what_a_request_may_generate() -> None:
    from inference_runtime.config import GatewayConfig
    from inference_runtime.gateway.limits import BUDGETED_MAX_TOKENS, apply_limits
    from inference_runtime.types import Deployment, SamplingParams

    budgeted = Deployment.from_dict(
        {"name": "d", "runtime": "fake", "budget": {"max_spend_per_hour": 1.0}}
    )
    free = Deployment.from_dict({"name": "d", "runtime": "fake"})
    gateway = GatewayConfig()
    bounded = apply_limits(SamplingParams(), deployment=budgeted, messages=1, gateway=gateway)
    assert bounded.max_tokens == BUDGETED_MAX_TOKENS
    assert (
        apply_limits(SamplingParams(), deployment=free, messages=1, gateway=gateway).max_tokens
        is None
    )
    asked = apply_limits(
        SamplingParams(max_tokens=9), deployment=budgeted, messages=1, gateway=gateway
    )
    assert asked.max_tokens == 9
