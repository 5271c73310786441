"""``MetricsRecorder``: per-deployment counters, histograms and cost (plain, single-writer)."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from inference_runtime.metrics.budget import WINDOWS, BudgetLedger
from inference_runtime.metrics.histogram import (
    DEFAULT_LATENCY_BUCKETS,
    INTER_TOKEN_BUCKETS,
    Histogram,
)
from inference_runtime.metrics.messages import OUTCOMES, RequestRecord
from inference_runtime.metrics.snapshot import DeploymentMetrics, MetricsSnapshot
from inference_runtime.types import Pricing

_FREE = Pricing()


class _DeploymentState:
    __slots__ = (
        "budget_rejections",
        "budget_warnings",
        "completion_tokens",
        "cost",
        "e2e",
        "errors",
        "inter_token",
        "pricing",
        "prompt_tokens",
        "queue",
        "requests",
        "ttft",
    )

    def __init__(
        self, pricing: Pricing, latency: Sequence[float], inter_token: Sequence[float]
    ) -> None:
        self.pricing = pricing
        self.requests = dict.fromkeys(OUTCOMES, 0)
        self.errors: dict[str, int] = {}
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.ttft = Histogram(latency)
        self.inter_token = Histogram(inter_token)
        self.e2e = Histogram(latency)
        self.queue = Histogram(latency)
        self.budget_warnings = 0
        self.budget_rejections = 0


class MetricsRecorder:
    """Counts, times and prices finished requests, per deployment.

    A deployment is created on its first ``configure`` or record (unknown ones are priced at
    zero). Histograms: time to first token and queue time when the record has them; the gaps
    between tokens; end to end for every admitted request (every outcome but ``rejected``, whose
    duration is only the refusal's). Negative durations count as zero.
    """

    def __init__(
        self,
        *,
        latency_buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        inter_token_buckets: Sequence[float] = INTER_TOKEN_BUCKETS,
    ) -> None:
        Histogram(latency_buckets)  # validate once, here, not on a deployment's first record
        Histogram(inter_token_buckets)
        self._latency = tuple(latency_buckets)
        self._inter_token = tuple(inter_token_buckets)
        self._state: dict[str, _DeploymentState] = {}

    def _get(self, deployment: str) -> _DeploymentState:
        state = self._state.get(deployment)
        if state is None:
            state = _DeploymentState(_FREE, self._latency, self._inter_token)
            self._state[deployment] = state
        return state

    def configure(self, deployment: str, pricing: Pricing) -> None:
        self._get(deployment).pricing = pricing

    def remove(self, deployment: str) -> None:
        self._state.pop(deployment, None)

    def pricing(self, deployment: str) -> Pricing:
        state = self._state.get(deployment)
        return state.pricing if state is not None else _FREE

    def deployments(self) -> frozenset[str]:
        return frozenset(self._state)

    def record(self, record: RequestRecord) -> float:
        """Count one finished request; returns its cost (from its usage and the pricing)."""
        state = self._get(record.deployment)
        state.requests[record.outcome] += 1
        if record.error_code is not None:
            state.errors[record.error_code] = state.errors.get(record.error_code, 0) + 1
        state.prompt_tokens += record.prompt_tokens
        state.completion_tokens += record.completion_tokens
        cost = state.pricing.cost(
            prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens
        )
        state.cost += cost
        if record.ttft_s is not None:
            state.ttft.observe(max(0.0, record.ttft_s))
        if record.queue_s is not None:
            state.queue.observe(max(0.0, record.queue_s))
        if record.outcome != "rejected":
            state.e2e.observe(max(0.0, record.e2e_s))
        if record.inter_token_s:  # one per token of a stream
            state.inter_token.observe_clamped(record.inter_token_s)
        return cost

    def budget_warned(self, deployment: str) -> None:
        self._get(deployment).budget_warnings += 1

    def budget_rejected(self, deployment: str) -> None:
        self._get(deployment).budget_rejections += 1

    def snapshot(
        self, ledger: BudgetLedger | None = None, *, taken_at: float = 0.0
    ) -> MetricsSnapshot:
        """Every deployment's metrics; spend, reservations and budgets come from ``ledger``."""
        names = self.deployments() | (ledger.deployments() if ledger is not None else frozenset())
        result: dict[str, DeploymentMetrics] = {}
        for name in sorted(names):
            state = self._state.get(name) or _DeploymentState(
                _FREE, self._latency, self._inter_token
            )
            result[name] = DeploymentMetrics(
                deployment=name,
                requests=MappingProxyType(dict(state.requests)),
                errors=MappingProxyType(dict(state.errors)),
                prompt_tokens=state.prompt_tokens,
                completion_tokens=state.completion_tokens,
                cost=state.cost,
                ttft=state.ttft.snapshot(),
                inter_token=state.inter_token.snapshot(),
                e2e=state.e2e.snapshot(),
                queue=state.queue.snapshot(),
                budget_warnings=state.budget_warnings,
                budget_rejections=state.budget_rejections,
                spend=MappingProxyType(
                    ledger.spent(name) if ledger is not None else dict.fromkeys(WINDOWS, 0.0)
                ),
                reserved=ledger.reserved(name) if ledger is not None else 0.0,
                reservations=ledger.open_reservations(name) if ledger is not None else 0,
                budget=ledger.budget(name) if ledger is not None else None,
            )
        return MetricsSnapshot(taken_at, MappingProxyType(result))
