"""``MetricsActor``: the single writer of counters, histograms, cost and budgets.

A thin shell: the work is done by ``MetricsRecorder`` and ``BudgetLedger``; the actor only
serialises access to them, so concurrent requests can never race on a budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from inference_runtime.actors import Actor, ActorRef
from inference_runtime.errors import BudgetExceeded, InferenceRuntimeError
from inference_runtime.metrics.budget import BudgetLedger
from inference_runtime.metrics.messages import (
    ConfigureDeployment,
    GetSnapshot,
    RemoveDeployment,
    RequestRecord,
    ReserveBudget,
)
from inference_runtime.metrics.recorder import MetricsRecorder
from inference_runtime.metrics.snapshot import MetricsSnapshot

log = logging.getLogger("inference_runtime.metrics")


def tell_record(metrics: ActorRef, record: RequestRecord) -> None:
    """Hand a finished request's record to the metrics actor; a full mailbox drops it with a
    warning rather than failing the request that is being finished."""
    try:
        metrics.tell(record)
    except InferenceRuntimeError:
        log.warning("metrics mailbox full; a request record was dropped")


PRUNE_INTERVAL_S = 60.0
"""How often old spend and unsettled reservations are dropped."""


@dataclass(frozen=True, slots=True)
class _Prune:
    """Timer tick: drop spend older than every window and expired reservations."""


class MetricsActor(Actor):
    """Per-deployment metrics, cost and budgets. See ``metrics.messages`` for the protocol.

    ``MetricsActor()`` builds fresh state on the system's clock. Pass a ``recorder`` and a
    ``ledger`` (built outside, closed over by the ``Props`` factory) to keep the state across a
    restart of the actor.
    """

    replied_errors: ClassVar[tuple[type[BaseException], ...]] = (InferenceRuntimeError,)
    direct_delivery: ClassVar[bool] = True  # a record per request: no wake-up each

    def __init__(
        self,
        *,
        recorder: MetricsRecorder | None = None,
        ledger: BudgetLedger | None = None,
        prune_interval: float = PRUNE_INTERVAL_S,
    ) -> None:
        self._recorder = recorder if recorder is not None else MetricsRecorder()
        self._ledger = ledger
        self._prune_interval = prune_interval

    @property
    def ledger(self) -> BudgetLedger:
        if self._ledger is None:
            self._ledger = BudgetLedger(self.context.system.clock.now)
        return self._ledger

    def pre_start(self) -> None:
        self.ledger  # noqa: B018 - build it on the system's clock now
        self.context.schedule_repeatedly(self._prune_interval, _Prune(), key="prune")

    def receive(self, message: Any) -> Any:
        match message:
            case RequestRecord():
                cost = self._recorder.record(message)
                self.ledger.settle(message.reservation, message.deployment, cost)
                return None
            case ReserveBudget():
                return self._reserve(message)
            case GetSnapshot():
                return self.snapshot()
            case ConfigureDeployment(deployment=deployment):
                self._recorder.configure(deployment.name, deployment.pricing)
                self.ledger.configure(deployment.name, deployment.budget)
                return None
            case RemoveDeployment(name=name):
                self._recorder.remove(name)
                self.ledger.remove(name)
                return None
            case _Prune():
                self.ledger.prune()
                return None
        # never fail (and restart, losing every counter) over a stray message
        log.warning("MetricsActor: unknown message %r; sent to dead letters", message)
        self.context.system.dead_letter(message, self.context.self_ref, self.context.sender)
        return None

    def _reserve(self, message: ReserveBudget) -> int:
        name = message.deployment
        worst = self._recorder.pricing(name).cost(
            prompt_tokens=message.prompt_tokens, completion_tokens=message.max_completion_tokens
        )
        try:
            admission = self.ledger.reserve(name, worst)
        except BudgetExceeded:
            self._recorder.budget_rejected(name)
            raise
        if admission.warning is not None:
            self._recorder.budget_warned(name)
            log.warning("deployment %s admitted over budget: %s", name, admission.warning)
        return admission.reservation

    def snapshot(self) -> MetricsSnapshot:
        return self._recorder.snapshot(self.ledger, taken_at=self.context.system.clock.now())
