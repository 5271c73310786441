"""MetricsActor over a real ActorSystem with a manual clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.errors import BudgetExceeded
from inference_runtime.metrics import (
    BudgetLedger,
    ConfigureDeployment,
    GetSnapshot,
    MetricsActor,
    MetricsRecorder,
    MetricsSnapshot,
    RemoveDeployment,
    RequestRecord,
    ReserveBudget,
    render_prometheus,
)
from inference_runtime.testing import ManualClock
from inference_runtime.types import Budget, Deployment, Pricing

PRICING = Pricing(input_per_mtok=1000.0, output_per_mtok=1000.0)  # 0.001 per token
WORST = ReserveBudget("chat", prompt_tokens=50, max_completion_tokens=50)  # 0.1


def deployment(on_exceeded: str = "reject", **extra: object) -> Deployment:
    return Deployment(
        name="chat",
        runtime="fake",
        pricing=PRICING,
        budget=Budget(max_spend_per_hour=1.0, on_exceeded=on_exceeded),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def system(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    system = ActorSystem.create("t", clock=clock)
    yield system
    await system.shutdown()


@pytest.fixture
def metrics(system: ActorSystem) -> ActorRef:
    return system.actor_of(Props(MetricsActor), "metrics")


async def snapshot(ref: ActorRef) -> MetricsSnapshot:
    result = await ref.ask(GetSnapshot())
    assert isinstance(result, MetricsSnapshot)
    return result


def done(reservation: int | None, outcome: str = "success", tokens: int = 20) -> RequestRecord:
    return RequestRecord(
        "chat", "r0", outcome, 30, tokens, e2e_s=1.0, ttft_s=0.1, reservation=reservation
    )


async def test_fifty_concurrent_reservations_admit_exactly_ten(metrics: ActorRef) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    results = await asyncio.gather(*(metrics.ask(WORST) for _ in range(50)), return_exceptions=True)
    admitted = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(admitted) == 10 and len(set(admitted)) == 10
    assert len(refused) == 40
    state = (await snapshot(metrics))["chat"]
    assert state.budget_rejections == 40
    assert state.reserved == pytest.approx(1.0)
    assert state.reservations == 10


async def test_settling_to_actual_cost_frees_room(metrics: ActorRef) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    ids = [await metrics.ask(WORST) for _ in range(10)]
    with pytest.raises(BudgetExceeded):
        await metrics.ask(WORST)
    for reservation in ids[:2]:
        metrics.tell(done(reservation))  # actual 0.05 each, reserved 0.1
    await metrics.ask(WORST)
    state = (await snapshot(metrics))["chat"]
    assert state.spend["hour"] == pytest.approx(0.1)
    assert state.reserved == pytest.approx(0.9)
    assert state.cost == pytest.approx(0.1)


async def test_spend_leaves_the_window_on_the_system_clock(
    metrics: ActorRef, clock: ManualClock
) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    for _ in range(10):
        metrics.tell(done(await metrics.ask(WORST), tokens=70))  # actual = worst case
    with pytest.raises(BudgetExceeded) as caught:
        await metrics.ask(WORST)
    assert caught.value.retry_after == pytest.approx(3600.0)
    assert "chat" in str(caught.value) and "hour" in str(caught.value)
    clock.advance(3600.0)
    assert isinstance(await metrics.ask(WORST), int)
    state = (await snapshot(metrics))["chat"]
    assert state.spend["hour"] == 0.0 and state.spend["day"] == pytest.approx(1.0)


async def test_warn_admits_and_counts(metrics: ActorRef) -> None:
    metrics.tell(ConfigureDeployment(deployment("warn")))
    results = [await metrics.ask(WORST) for _ in range(12)]
    assert all(isinstance(r, int) for r in results)
    state = (await snapshot(metrics))["chat"]
    assert state.budget_warnings == 2 and state.budget_rejections == 0


async def test_throttle_answers_budget_exceeded(metrics: ActorRef) -> None:
    metrics.tell(ConfigureDeployment(deployment("throttle")))
    for _ in range(10):
        await metrics.ask(WORST)
    with pytest.raises(BudgetExceeded) as caught:
        await metrics.ask(WORST)
    assert caught.value.retry_after >= 1.0


async def test_cancelled_requests_tokens_are_charged(metrics: ActorRef) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    reservation = await metrics.ask(WORST)
    metrics.tell(done(reservation, outcome="cancelled", tokens=7))
    state = (await snapshot(metrics))["chat"]
    assert state.requests["cancelled"] == 1
    assert state.completion_tokens == 7
    assert state.spend["hour"] == pytest.approx(0.037)
    assert state.reserved == 0.0 and state.reservations == 0


async def test_cheap_path_and_unknown_deployments(metrics: ActorRef) -> None:
    free = Deployment(name="free", runtime="fake", budget=Budget(max_spend_per_hour=0.01))
    metrics.tell(ConfigureDeployment(free))
    ids = {await metrics.ask(ReserveBudget("free", 10**6, 10**6)) for _ in range(3)}
    ids.add(await metrics.ask(ReserveBudget("nobody", 10, 10)))
    assert len(ids) == 4
    state = await snapshot(metrics)
    assert state["free"].reservations == 0


async def test_remove_deployment(metrics: ActorRef) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    metrics.tell(done(await metrics.ask(WORST)))
    metrics.tell(RemoveDeployment("chat"))
    assert "chat" not in await snapshot(metrics)


async def test_unknown_messages_go_to_dead_letters(system: ActorSystem, metrics: ActorRef) -> None:
    assert await metrics.ask("what?") is None
    assert system.dead_letters.count == 1
    assert metrics.is_alive


async def test_unsettled_reservations_expire(metrics: ActorRef, clock: ManualClock) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    for _ in range(10):
        await metrics.ask(WORST)
    clock.advance(3600.0)  # the prune timer fires; the reservations' TTL (1 h) has passed
    await asyncio.sleep(0)
    state = (await snapshot(metrics))["chat"]
    assert state.reservations == 0 and state.reserved == 0.0


async def test_injected_state_outlives_the_actor(system: ActorSystem, clock: ManualClock) -> None:
    recorder, ledger = MetricsRecorder(), BudgetLedger(clock.now)
    ref = system.actor_of(Props(lambda: MetricsActor(recorder=recorder, ledger=ledger)))
    ref.tell(ConfigureDeployment(deployment()))
    ref.tell(done(None))
    await snapshot(ref)  # handled before the stop
    ref.stop()
    await ref.wait_stopped()
    again = system.actor_of(Props(lambda: MetricsActor(recorder=recorder, ledger=ledger)))
    state = await snapshot(again)
    assert state["chat"].requests["success"] == 1
    assert state["chat"].spend["hour"] == pytest.approx(0.05)


async def test_snapshot_renders(metrics: ActorRef, system: ActorSystem) -> None:
    metrics.tell(ConfigureDeployment(deployment()))
    metrics.tell(done(await metrics.ask(WORST)))
    stats = system.statistics()
    text = render_prometheus(
        await snapshot(metrics), dead_letters=stats.dead_letters, actors_alive=stats.actors_alive
    )
    assert b'inference_runtime_requests_total{deployment="chat",outcome="success"} 1.0' in text
    assert b"inference_runtime_actors_alive 1.0" in text


def test_a_record_to_a_full_mailbox_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from inference_runtime.errors import MailboxFull
    from inference_runtime.metrics import RequestRecord, tell_record

    class Full:
        def tell(self, message: object) -> None:
            raise MailboxFull("/user/metrics", 1)

    record = RequestRecord(
        deployment="d", replica_id=None, outcome="success", prompt_tokens=1,
        completion_tokens=1, e2e_s=0.1,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="inference_runtime.metrics"):
        tell_record(Full(), record)  # type: ignore[arg-type]
    assert "record was dropped" in caplog.text
