"""Prometheus text exposition: parses, and carries the right values."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from inference_runtime.metrics import (
    PROMETHEUS_CONTENT_TYPE,
    BudgetLedger,
    MetricsRecorder,
    ReplicaGauge,
    RequestRecord,
    render_prometheus,
)
from inference_runtime.types import Budget, EngineLoad, Pricing, ReplicaState

P = "inference_runtime_"


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    result: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            assert isinstance(sample, Sample)
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (P + name, frozenset(labels.items()))


def build() -> bytes:
    now = [0.0]
    recorder, ledger = MetricsRecorder(), BudgetLedger(lambda: now[0])
    recorder.configure("chat", Pricing(input_per_mtok=1e6, output_per_mtok=2e6))
    ledger.configure("chat", Budget(max_spend_per_hour=1000.0))
    for outcome, ttft in (("success", 0.05), ("success", 0.3), ("cancelled", None)):
        record = RequestRecord(
            "chat", "r0", outcome, 3, 2, e2e_s=0.5, ttft_s=ttft, inter_token_s=(0.01,)
        )
        ledger.settle(None, "chat", recorder.record(record))
    ledger.reserve("chat", 4.0)
    recorder.budget_rejected("chat")
    recorder.record(RequestRecord("chat", None, "error", 3, 0, 0.1, error_code="timeout"))
    replicas = [
        ReplicaGauge("chat", "r0", "healthy", in_flight=3, waiting=1, running=2),
        ReplicaGauge("chat", "r1", "failed", context_restarts=4),
    ]
    return render_prometheus(
        recorder.snapshot(ledger), replicas=replicas, dead_letters=7, actors_alive=12
    )


def test_content_type() -> None:
    assert PROMETHEUS_CONTENT_TYPE.startswith("text/plain")


def test_request_counters_tokens_and_cost() -> None:
    values = samples(build())
    assert values[key("requests_total", deployment="chat", outcome="success")] == 2
    assert values[key("requests_total", deployment="chat", outcome="cancelled")] == 1
    assert values[key("requests_total", deployment="chat", outcome="rejected")] == 0
    assert values[key("errors_total", deployment="chat", code="timeout")] == 1
    assert values[key("tokens_input_total", deployment="chat")] == 12
    assert values[key("tokens_output_total", deployment="chat")] == 6
    assert values[key("cost_total", deployment="chat")] == 3 * 7.0 + 3.0


def test_histograms() -> None:
    values = samples(build())
    ttft = "time_to_first_token_seconds"
    assert values[key(ttft + "_bucket", deployment="chat", le="0.05")] == 1
    assert values[key(ttft + "_bucket", deployment="chat", le="0.25")] == 1
    assert values[key(ttft + "_bucket", deployment="chat", le="0.5")] == 2
    assert values[key(ttft + "_bucket", deployment="chat", le="+Inf")] == 2
    assert values[key(ttft + "_count", deployment="chat")] == 2
    assert values[key(ttft + "_sum", deployment="chat")] == 0.35
    assert values[key("e2e_latency_seconds_count", deployment="chat")] == 4
    assert values[key("inter_token_latency_seconds_count", deployment="chat")] == 3
    assert values[key("queue_time_seconds_count", deployment="chat")] == 0


def test_budget_gauges() -> None:
    values = samples(build())
    assert values[key("budget_spend", deployment="chat", window="hour")] == 21.0
    assert values[key("budget_spend", deployment="chat", window="day")] == 21.0
    assert values[key("budget_reserved", deployment="chat")] == 4.0
    assert values[key("budget_rejections_total", deployment="chat")] == 1
    assert values[key("budget_warnings_total", deployment="chat")] == 0


def test_replica_gauges() -> None:
    values = samples(build())
    assert values[key("in_flight", deployment="chat", replica="r0")] == 3
    assert values[key("queue_depth", deployment="chat", replica="r0")] == 1
    assert values[key("running", deployment="chat", replica="r0")] == 2
    assert values[key("context_restarts_total", deployment="chat", replica="r1")] == 4
    for state in ("starting", "healthy", "draining", "failed"):
        expected = 1.0 if state == "healthy" else 0.0
        labels = {"deployment": "chat", "replica": "r0", "state": state}
        assert values[key("replica_state", **labels)] == expected
    assert values[key("replica_state", deployment="chat", replica="r1", state="failed")] == 1


def test_system_gauges() -> None:
    values = samples(build())
    assert values[key("dead_letters_total")] == 7
    assert values[key("actors_alive")] == 12


def test_an_unknown_replica_state_gets_its_own_series() -> None:
    recorder = MetricsRecorder()
    text = render_prometheus(recorder.snapshot(), replicas=[ReplicaGauge("d", "r", "paused")])
    values = samples(text)
    assert values[key("replica_state", deployment="d", replica="r", state="paused")] == 1
    assert values[key("replica_state", deployment="d", replica="r", state="healthy")] == 0


def test_empty_snapshot_renders() -> None:
    values = samples(render_prometheus(MetricsRecorder().snapshot()))
    assert values == {key("dead_letters_total"): 0, key("actors_alive"): 0}


def test_label_values_are_escaped() -> None:
    recorder = MetricsRecorder()
    recorder.record(RequestRecord('we"ird\\name\n', None, "success", 1, 1, 0.1))
    values = samples(render_prometheus(recorder.snapshot()))
    assert values[key("tokens_input_total", deployment='we"ird\\name\n')] == 1


def test_replica_gauge_from_an_engine_load() -> None:
    load = EngineLoad(
        deployment="d", replica_id="r", state=ReplicaState.DRAINING, waiting=2, running=3
    )
    gauge = ReplicaGauge.from_load(load, in_flight=5)
    assert gauge == ReplicaGauge("d", "r", "draining", in_flight=5, waiting=2, running=3)
