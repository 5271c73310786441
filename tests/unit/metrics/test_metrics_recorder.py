"""MetricsRecorder: counts, tokens, cost and histograms per deployment."""

from __future__ import annotations

import pytest

from inference_runtime.metrics import WINDOWS, BudgetLedger, MetricsRecorder, RequestRecord
from inference_runtime.types import Budget, Pricing

PRICED = Pricing(input_per_mtok=1000.0, output_per_mtok=2000.0)


def record(outcome: str = "success", **fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "deployment": "d",
        "replica_id": "r0",
        "outcome": outcome,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "e2e_s": 0.2,
    }
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]


def test_counts_tokens_and_cost() -> None:
    recorder = MetricsRecorder()
    recorder.configure("d", PRICED)
    assert recorder.record(record()) == pytest.approx(0.02)
    recorder.record(record("error", error_code="upstream_error", completion_tokens=0))
    metrics = recorder.snapshot()["d"]
    assert dict(metrics.requests) == {"success": 1, "error": 1, "cancelled": 0, "rejected": 0}
    assert metrics.requests_total == 2
    assert dict(metrics.errors) == {"upstream_error": 1}
    assert (metrics.prompt_tokens, metrics.completion_tokens) == (20, 5)
    assert metrics.cost == pytest.approx(0.03)


def test_histograms() -> None:
    recorder = MetricsRecorder()
    recorder.record(record(ttft_s=0.05, queue_s=0.01, inter_token_s=(0.02, 0.03, -1.0)))
    recorder.record(record())  # no ttft, no queue time
    recorder.record(record("rejected", e2e_s=0.001))  # never ran: no e2e observation
    metrics = recorder.snapshot()["d"]
    assert metrics.ttft.count == 1 and metrics.ttft.sum == pytest.approx(0.05)
    assert metrics.queue.count == 1
    assert metrics.inter_token.count == 3
    assert metrics.inter_token.sum == pytest.approx(0.05)  # the negative gap counts as 0
    assert metrics.e2e.count == 2


def test_unknown_deployments_are_created_at_zero_price() -> None:
    recorder = MetricsRecorder()
    assert recorder.record(record(deployment="new")) == 0.0
    assert "new" in recorder.snapshot()
    recorder.remove("new")
    assert "new" not in recorder.snapshot()


def test_budget_counters() -> None:
    recorder = MetricsRecorder()
    recorder.budget_warned("d")
    recorder.budget_rejected("d")
    recorder.budget_rejected("d")
    metrics = recorder.snapshot()["d"]
    assert (metrics.budget_warnings, metrics.budget_rejections) == (1, 2)


def test_snapshot_with_a_ledger() -> None:
    recorder, ledger = MetricsRecorder(), BudgetLedger(lambda: 5.0)
    budget = Budget(max_spend_per_day=3.0)
    ledger.configure("d", budget)
    ledger.settle(None, "d", 1.0)
    ledger.reserve("d", 0.5)
    snapshot = recorder.snapshot(ledger, taken_at=5.0)
    metrics = snapshot["d"]
    assert snapshot.taken_at == 5.0
    assert dict(metrics.spend) == {"hour": 1.0, "day": 1.0}
    assert (metrics.reserved, metrics.reservations, metrics.budget) == (0.5, 1, budget)
    assert [m.deployment for m in snapshot] == ["d"] and len(snapshot) == 1


def test_snapshot_without_a_ledger_has_zero_spend() -> None:
    recorder = MetricsRecorder()
    recorder.record(record())
    assert dict(recorder.snapshot()["d"].spend) == dict.fromkeys(WINDOWS, 0.0)


def test_snapshot_is_detached() -> None:
    recorder = MetricsRecorder()
    recorder.record(record())
    before = recorder.snapshot()["d"]
    recorder.record(record())
    assert before.requests["success"] == 1
    with pytest.raises(TypeError):
        before.requests["success"] = 5  # type: ignore[index]


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="outcome"):
        record("done")
    with pytest.raises(ValueError):
        record(prompt_tokens=-1)


def test_custom_buckets_are_validated_up_front() -> None:
    with pytest.raises(ValueError):
        MetricsRecorder(latency_buckets=(2.0, 1.0))
    recorder = MetricsRecorder(latency_buckets=(1.0,), inter_token_buckets=(0.1,))
    recorder.record(record())
    assert recorder.snapshot()["d"].e2e.bounds == (1.0,)
