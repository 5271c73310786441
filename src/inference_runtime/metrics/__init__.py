"""Metrics: per-deployment counters, histograms, cost and budgets, and their Prometheus text.

``MetricsActor`` is the single writer (race-free); it is a thin shell over the plain classes
``MetricsRecorder`` (counts, histograms, cost) and ``BudgetLedger`` (rolling spend windows and
worst-case reservations, over a ``SpendStore``). ``render_prometheus`` renders a snapshot.
"""

from inference_runtime.metrics.actor import PRUNE_INTERVAL_S, MetricsActor, tell_record
from inference_runtime.metrics.budget import WINDOWS, Admission, BudgetLedger
from inference_runtime.metrics.exposition import (
    PROMETHEUS_CONTENT_TYPE,
    REPLICA_STATES,
    CircuitGauge,
    ReplicaGauge,
    render_prometheus,
)
from inference_runtime.metrics.histogram import (
    DEFAULT_LATENCY_BUCKETS,
    INTER_TOKEN_BUCKETS,
    Histogram,
    HistogramSnapshot,
)
from inference_runtime.metrics.messages import (
    OUTCOMES,
    ConfigureDeployment,
    GetSnapshot,
    RemoveDeployment,
    RequestRecord,
    ReserveBudget,
)
from inference_runtime.metrics.recorder import MetricsRecorder
from inference_runtime.metrics.snapshot import DeploymentMetrics, MetricsSnapshot
from inference_runtime.metrics.spend import InMemorySpendStore, SpendStore

__all__ = [
    "DEFAULT_LATENCY_BUCKETS",
    "INTER_TOKEN_BUCKETS",
    "OUTCOMES",
    "PROMETHEUS_CONTENT_TYPE",
    "PRUNE_INTERVAL_S",
    "REPLICA_STATES",
    "WINDOWS",
    "Admission",
    "BudgetLedger",
    "CircuitGauge",
    "ConfigureDeployment",
    "DeploymentMetrics",
    "GetSnapshot",
    "Histogram",
    "HistogramSnapshot",
    "InMemorySpendStore",
    "MetricsActor",
    "MetricsRecorder",
    "MetricsSnapshot",
    "RemoveDeployment",
    "ReplicaGauge",
    "RequestRecord",
    "ReserveBudget",
    "SpendStore",
    "render_prometheus",
    "tell_record",
]
