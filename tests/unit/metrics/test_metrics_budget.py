"""BudgetLedger: rolling windows, reservations, admission policies, on a manual time source."""

from __future__ import annotations

import pytest

from inference_runtime.errors import BudgetExceeded
from inference_runtime.metrics import BudgetLedger
from inference_runtime.metrics.budget import input_token_bound, prompt_token_bound
from inference_runtime.testing import FakeRunner
from inference_runtime.types import Budget, ChatMessage, Deployment, EngineRequest


class Now:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def now() -> Now:
    return Now()


def ledger_with(now: Now, **budget: object) -> BudgetLedger:
    ledger = BudgetLedger(now)
    ledger.configure("d", Budget(**budget))  # type: ignore[arg-type]
    return ledger


def test_spend_leaves_the_hour_window_after_3600_s(now: Now) -> None:
    ledger = BudgetLedger(now)
    ledger.settle(None, "d", 2.0)
    now.t += 3599.0
    assert ledger.spent("d") == {"hour": 2.0, "day": 2.0}
    now.t += 1.0
    assert ledger.spent("d") == {"hour": 0.0, "day": 2.0}


def test_spend_leaves_the_day_window_after_86400_s(now: Now) -> None:
    ledger = BudgetLedger(now)
    ledger.settle(None, "d", 2.0)
    now.t += 86399.0
    assert ledger.spent("d")["day"] == 2.0
    now.t += 1.0
    assert ledger.spent("d")["day"] == 0.0


def test_no_budget_or_zero_cost_is_the_cheap_path(now: Now) -> None:
    ledger = BudgetLedger(now)
    first, second = ledger.reserve("d", 100.0), ledger.reserve("d", 100.0)
    assert first.reservation != second.reservation
    assert ledger.reserved("d") == 0.0
    budgeted = ledger_with(now, max_spend_per_hour=1.0)
    budgeted.reserve("d", 0.0)
    assert budgeted.open_reservations("d") == 0


def test_reservations_hold_room_until_settled(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    ids = [ledger.reserve("d", 0.1).reservation for _ in range(10)]
    assert ledger.reserved("d") == pytest.approx(1.0)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("d", 0.1)
    ledger.settle(ids[0], "d", 0.02)  # actual cost below worst case frees room
    assert ledger.reserved("d") == pytest.approx(0.9)
    assert ledger.spent("d")["hour"] == pytest.approx(0.02)
    ledger.reserve("d", 0.05)
    for reservation in ids[1:]:
        ledger.release(reservation)
    ledger.settle(ids[1], "d", 0.0)  # settling twice is harmless
    assert ledger.open_reservations("d") == 1


def test_reject_names_deployment_window_and_retry_after(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    ledger.settle(None, "d", 0.5)
    now.t += 100.0
    ledger.settle(None, "d", 0.4)
    now.t += 100.0
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("d", 0.3)
    error = caught.value
    assert "'d'" in str(error) and "hour window" in str(error)
    # 0.2 must leave: the first 0.5 leaves 3600 s after it was spent, 200 s ago
    assert error.retry_after == pytest.approx(3400.0)
    now.t += 3400.0
    ledger.reserve("d", 0.3)


def test_retry_after_is_at_least_one_second(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    ledger.settle(None, "d", 1.0)
    now.t += 3599.5
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("d", 0.5)
    assert caught.value.retry_after == 1.0


def test_day_window_is_enforced_too(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=10.0, max_spend_per_day=1.0)
    ledger.settle(None, "d", 0.9)
    now.t += 7200.0
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("d", 0.2)
    assert "day window" in str(caught.value) and "hour window" not in str(caught.value)
    assert caught.value.retry_after == pytest.approx(86400.0 - 7200.0)


def test_a_request_over_the_whole_limit_waits_a_window(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("d", 2.0)
    assert "lower max_tokens" in str(caught.value)
    assert caught.value.retry_after == 3600.0


def test_held_by_reservations_retries_soon(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    ledger.reserve("d", 0.8)
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("d", 0.3)
    assert caught.value.retry_after == 1.0


def test_throttle_raises_like_reject(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0, on_exceeded="throttle")
    ledger.reserve("d", 1.0)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("d", 0.1)


def test_warn_admits_and_says_why(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0, on_exceeded="warn")
    assert ledger.reserve("d", 1.0).warning is None
    admission = ledger.reserve("d", 0.5)
    assert admission.warning is not None and "hour window" in admission.warning
    assert ledger.reserved("d") == pytest.approx(1.5)


def test_exact_fit_is_admitted_despite_float_sums(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=0.3)
    for _ in range(3):
        ledger.reserve("d", 0.1)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("d", 0.1)


def test_prune_releases_unsettled_reservations(now: Now) -> None:
    ledger = BudgetLedger(now, reservation_ttl=600.0)
    ledger.configure("d", Budget(max_spend_per_hour=1.0))
    ledger.reserve("d", 1.0)
    now.t += 599.0
    assert ledger.prune() == 0
    now.t += 1.0
    assert ledger.prune() == 1
    assert ledger.reserved("d") == 0.0
    ledger.reserve("d", 1.0)


def test_remove_forgets_everything(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    ledger.settle(None, "d", 0.5)
    ledger.reserve("d", 0.5)
    ledger.remove("d")
    assert ledger.deployments() == frozenset()
    assert ledger.budget("d") is None
    assert ledger.spent("d") == {"hour": 0.0, "day": 0.0}
    assert ledger.reserved("d") == 0.0


def test_reconfigure_without_budget_lifts_enforcement(now: Now) -> None:
    ledger = ledger_with(now, max_spend_per_hour=1.0)
    ledger.settle(None, "d", 1.0)
    ledger.configure("d", None)
    ledger.reserve("d", 5.0)


TEXTS = [
    "",
    "hello world",
    " ".join("预算必须精确"),
    " ".join("😀🚀🎉"),
    "a字😀b\u0301",
    "x " * 500,
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_prompt_bound_is_never_below_the_real_count(text: str) -> None:
    runner = FakeRunner(Deployment(name="d", runtime="fake"))
    chat = EngineRequest(
        request_id="r",
        deployment="d",
        messages=(ChatMessage(role="system", content=text), ChatMessage(role="user", content=text)),
    )
    plain = EngineRequest(request_id="r", deployment="d", prompt=text)
    for request in (chat, plain):
        ids, rendered = runner.encode(request)
        bound = prompt_token_bound(request)
        assert bound >= len(ids)
        assert bound >= len(rendered.encode())  # a byte-level BPE: at most a token a byte
    assert input_token_bound(text) >= len(text.encode()) + 2  # BERT's [CLS] and [SEP]
    assert input_token_bound((1, 2, 3)) >= 3


def test_a_forwarded_body_bounds_the_prompt_by_its_bytes() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d" * 400}}]
    request = EngineRequest(
        request_id="r",
        deployment="d",
        messages=(ChatMessage(role="user", content="hi"),),
        passthrough={"messages": [{"role": "user", "content": "hi"}], "tools": tools},
    )
    assert prompt_token_bound(request) > 400  # the tools count as prompt at the provider
