"""Frozen views of the metrics: what ``GetSnapshot`` answers and the exposition renders."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from inference_runtime.metrics.histogram import HistogramSnapshot
from inference_runtime.types import Budget


@dataclass(frozen=True, slots=True)
class DeploymentMetrics:
    """One deployment's counters, histograms, cost and budget state."""

    deployment: str
    requests: Mapping[str, int]
    """Finished requests by outcome (every outcome present, zero or not)."""
    errors: Mapping[str, int]
    """Requests that carried an ``error_code``, by code."""
    prompt_tokens: int
    completion_tokens: int
    cost: float
    """Total cost of every recorded request (the operator's currency)."""
    ttft: HistogramSnapshot
    inter_token: HistogramSnapshot
    e2e: HistogramSnapshot
    queue: HistogramSnapshot
    budget_warnings: int
    """Requests admitted over budget by a ``warn`` budget."""
    budget_rejections: int
    """Reservations refused (``reject`` or ``throttle`` budgets)."""
    spend: Mapping[str, float]
    """Settled spend in each rolling window, by window name (``hour``, ``day``)."""
    reserved: float
    """Worst-case cost held by requests in flight."""
    reservations: int
    """Requests in flight holding a reservation."""
    budget: Budget | None

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Every deployment's metrics at time ``taken_at`` (the actor system's clock)."""

    taken_at: float
    deployments: Mapping[str, DeploymentMetrics]

    def __getitem__(self, deployment: str) -> DeploymentMetrics:
        return self.deployments[deployment]

    def __contains__(self, deployment: object) -> bool:
        return deployment in self.deployments

    def __iter__(self) -> Iterator[DeploymentMetrics]:
        """The deployments' metrics, by name."""
        return iter([self.deployments[name] for name in sorted(self.deployments)])

    def __len__(self) -> int:
        return len(self.deployments)
