"""Prometheus text exposition of a ``MetricsSnapshot`` and the replicas' live gauges."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from inference_runtime.metrics.histogram import HistogramSnapshot
from inference_runtime.metrics.snapshot import DeploymentMetrics, MetricsSnapshot
from inference_runtime.types import EngineLoad, ReplicaState

PROMETHEUS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of what :func:`render_prometheus` returns."""

PREFIX = "inference_runtime_"
REPLICA_STATES: tuple[str, ...] = tuple(state.value for state in ReplicaState)
"""The states ``replica_state`` has one series for (``ReplicaState`` values)."""


@dataclass(frozen=True, slots=True)
class ReplicaGauge:
    """One replica's live load, as the exposition shows it."""

    deployment: str
    replica_id: str
    state: str
    """One of ``REPLICA_STATES`` (a ``ReplicaState`` value)."""
    in_flight: int = 0
    waiting: int = 0
    running: int = 0
    context_restarts: int = 0
    failures: int = 0
    """Times supervision or the health check took the replica out (it was re-placed)."""
    moves: int = 0
    """Times it was re-placed somewhere else (another GPU or node)."""

    @classmethod
    def from_load(cls, load: EngineLoad, *, in_flight: int = 0) -> ReplicaGauge:
        """From a replica's own report; ``in_flight`` is the coordinator's exact count."""
        return cls(
            deployment=load.deployment,
            replica_id=load.replica_id,
            state=load.state.value,
            in_flight=in_flight,
            waiting=load.waiting,
            running=load.running,
            context_restarts=load.context_restarts,
        )


def _histogram(
    family: HistogramMetricFamily, labels: list[str], snapshot: HistogramSnapshot
) -> None:
    cumulative = snapshot.cumulative()
    buckets = [(repr(bound), float(cumulative[i])) for i, bound in enumerate(snapshot.bounds)]
    buckets.append(("+Inf", float(cumulative[-1])))
    family.add_metric(labels, buckets, snapshot.sum)


def _deployment_families(deployments: list[DeploymentMetrics]) -> Iterator[Metric]:
    dep = ["deployment"]
    requests = CounterMetricFamily(
        PREFIX + "requests", "Finished requests by outcome.", labels=[*dep, "outcome"]
    )
    errors = CounterMetricFamily(
        PREFIX + "errors", "Requests that failed, by error code.", labels=[*dep, "code"]
    )
    tokens_in = CounterMetricFamily(PREFIX + "tokens_input", "Prompt tokens.", labels=dep)
    tokens_out = CounterMetricFamily(PREFIX + "tokens_output", "Completion tokens.", labels=dep)
    cost = CounterMetricFamily(PREFIX + "cost", "Cost of recorded requests.", labels=dep)
    histograms = {
        "ttft": HistogramMetricFamily(
            PREFIX + "time_to_first_token_seconds", "Time to first token.", labels=dep
        ),
        "inter_token": HistogramMetricFamily(
            PREFIX + "inter_token_latency_seconds", "Gap between consecutive tokens.", labels=dep
        ),
        "e2e": HistogramMetricFamily(
            PREFIX + "e2e_latency_seconds", "End-to-end request latency.", labels=dep
        ),
        "queue": HistogramMetricFamily(
            PREFIX + "queue_time_seconds", "Time queued before running.", labels=dep
        ),
    }
    spend = GaugeMetricFamily(
        PREFIX + "budget_spend", "Settled spend in the rolling window.", labels=[*dep, "window"]
    )
    reserved = GaugeMetricFamily(
        PREFIX + "budget_reserved", "Worst-case cost reserved by requests in flight.", labels=dep
    )
    rejections = CounterMetricFamily(
        PREFIX + "budget_rejections", "Requests refused by a budget.", labels=dep
    )
    warnings = CounterMetricFamily(
        PREFIX + "budget_warnings", "Requests admitted over a warn budget.", labels=dep
    )
    for metrics in deployments:
        name = [metrics.deployment]
        for outcome, count in metrics.requests.items():
            requests.add_metric([*name, outcome], count)
        for code, count in sorted(metrics.errors.items()):
            errors.add_metric([*name, code], count)
        tokens_in.add_metric(name, metrics.prompt_tokens)
        tokens_out.add_metric(name, metrics.completion_tokens)
        cost.add_metric(name, metrics.cost)
        for field, family in histograms.items():
            _histogram(family, name, getattr(metrics, field))
        for window, amount in metrics.spend.items():
            spend.add_metric([*name, window], amount)
        reserved.add_metric(name, metrics.reserved)
        rejections.add_metric(name, metrics.budget_rejections)
        warnings.add_metric(name, metrics.budget_warnings)
    yield from (requests, errors, tokens_in, tokens_out, cost, *histograms.values())
    yield from (spend, reserved, rejections, warnings)


def _replica_families(replicas: list[ReplicaGauge]) -> Iterator[Metric]:
    labels = ["deployment", "replica"]
    in_flight = GaugeMetricFamily(
        PREFIX + "in_flight", "Requests routed to the replica, not finished.", labels=labels
    )
    queue_depth = GaugeMetricFamily(
        PREFIX + "queue_depth", "Sequences waiting at the replica.", labels=labels
    )
    running = GaugeMetricFamily(
        PREFIX + "running", "Sequences in the replica's running batch.", labels=labels
    )
    state = GaugeMetricFamily(
        PREFIX + "replica_state", "1 for the replica's current state.", labels=[*labels, "state"]
    )
    restarts = CounterMetricFamily(
        PREFIX + "context_restarts", "Model context rebuilds of the replica.", labels=labels
    )
    failures = CounterMetricFamily(
        PREFIX + "replica_failures",
        "Times the replica was taken out (supervision, health check) and re-placed.",
        labels=labels,
    )
    moves = CounterMetricFamily(
        PREFIX + "replica_moves", "Times the replica was re-placed elsewhere.", labels=labels
    )
    for replica in replicas:
        ids = [replica.deployment, replica.replica_id]
        failures.add_metric(ids, replica.failures)
        moves.add_metric(ids, replica.moves)
        in_flight.add_metric(ids, replica.in_flight)
        queue_depth.add_metric(ids, replica.waiting)
        running.add_metric(ids, replica.running)
        names = REPLICA_STATES
        if replica.state not in names:
            names = (*names, replica.state)
        for name in names:
            state.add_metric([*ids, name], 1.0 if name == replica.state else 0.0)
        restarts.add_metric(ids, replica.context_restarts)
    yield from (in_flight, queue_depth, running, state, restarts, failures, moves)


@dataclass(frozen=True, slots=True)
class CircuitGauge:
    """One circuit breaker (a provider endpoint), as the exposition shows it."""

    provider: str
    endpoint: str
    state: str
    """closed, open or half_open."""
    opened_total: int = 0
    rejected_total: int = 0


CIRCUIT_STATES = ("closed", "open", "half_open")


def _circuit_families(circuits: list[CircuitGauge]) -> Iterator[Metric]:
    labels = ["provider", "endpoint"]
    state = GaugeMetricFamily(
        PREFIX + "circuit_state",
        "1 for the circuit breaker's current state (closed, open, half_open).",
        labels=[*labels, "state"],
    )
    opened = CounterMetricFamily(
        PREFIX + "circuit_opened", "Times the circuit opened.", labels=labels
    )
    rejected = CounterMetricFamily(
        PREFIX + "circuit_rejected", "Requests failed fast while it was open.", labels=labels
    )
    for c in circuits:
        for name in CIRCUIT_STATES:
            state.add_metric([c.provider, c.endpoint, name], 1.0 if c.state == name else 0.0)
        opened.add_metric([c.provider, c.endpoint], c.opened_total)
        rejected.add_metric([c.provider, c.endpoint], c.rejected_total)
    yield from (state, opened, rejected)


class _SnapshotCollector:
    """A prometheus_client collector over values taken once (nothing is live)."""

    def __init__(
        self,
        snapshot: MetricsSnapshot,
        replicas: list[ReplicaGauge],
        dead_letters: int,
        actors_alive: int,
        circuits: list[CircuitGauge],
    ) -> None:
        self._circuits = circuits
        self._snapshot = snapshot
        self._replicas = replicas
        self._dead_letters = dead_letters
        self._actors_alive = actors_alive

    def collect(self) -> Iterator[Metric]:
        yield from _deployment_families(list(self._snapshot))
        yield from _replica_families(self._replicas)
        if self._circuits:
            yield from _circuit_families(self._circuits)
        yield CounterMetricFamily(
            PREFIX + "dead_letters", "Messages that reached no actor.", value=self._dead_letters
        )
        yield GaugeMetricFamily(
            PREFIX + "actors_alive", "Actors alive in the system.", value=self._actors_alive
        )


def render_prometheus(
    snapshot: MetricsSnapshot,
    *,
    replicas: Iterable[ReplicaGauge] = (),
    dead_letters: int = 0,
    actors_alive: int = 0,
    circuits: Iterable[CircuitGauge] = (),
) -> bytes:
    """The Prometheus text format (``PROMETHEUS_CONTENT_TYPE``) of everything given."""
    registry = CollectorRegistry(auto_describe=False)
    collector = _SnapshotCollector(
        snapshot, list(replicas), dead_letters, actors_alive, list(circuits)
    )
    registry.register(collector)
    return generate_latest(registry)
