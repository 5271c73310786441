"""What the ``MetricsActor`` understands. Every message is a frozen dataclass with slots."""

from __future__ import annotations

from dataclasses import dataclass

from inference_runtime.types import Deployment

OUTCOMES: tuple[str, ...] = ("success", "error", "cancelled", "rejected")
"""The outcomes a ``RequestRecord`` may carry."""


@dataclass(frozen=True, slots=True)
class ConfigureDeployment:
    """(tell) Register a deployment, or update its pricing and budget."""

    deployment: Deployment


@dataclass(frozen=True, slots=True)
class RemoveDeployment:
    """(tell) Forget a deployment: its metrics, spend and reservations."""

    name: str


@dataclass(frozen=True, slots=True)
class ReserveBudget:
    """(ask) Reserve the request's worst-case cost; answers an ``int`` reservation id.

    Raises ``BudgetExceeded`` (``retry_after`` set) when the hour or day window has no room and
    the budget's ``on_exceeded`` is ``reject`` or ``throttle``. A ``throttle`` deployment's caller
    waits ``retry_after`` seconds and asks again (up to its queue timeout), then rejects. ``warn``
    admits and counts a budget warning. Without a budget, or at zero price, an id is answered at
    once. Pass the id back in ``RequestRecord.reservation`` to settle it.
    """

    deployment: str
    prompt_tokens: int
    max_completion_tokens: int

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.max_completion_tokens < 0:
            raise ValueError("ReserveBudget: token counts must be >= 0")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """(tell) A finished request: counted, timed, priced, and its reservation settled.

    ``outcome`` is one of ``OUTCOMES``. Tokens produced before a cancel are carried here and
    charged. Times are seconds; ``inter_token_s`` holds the gaps between consecutive tokens.
    """

    deployment: str
    replica_id: str | None
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    e2e_s: float
    ttft_s: float | None = None
    queue_s: float | None = None
    inter_token_s: tuple[float, ...] = ()
    error_code: str | None = None
    reservation: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"RequestRecord.outcome {self.outcome!r} is not one of {OUTCOMES}")
        if self.prompt_tokens < 0 or self.completion_tokens < 0:
            raise ValueError("RequestRecord: token counts must be >= 0")


@dataclass(frozen=True, slots=True)
class GetSnapshot:
    """(ask) Answers a ``MetricsSnapshot`` of every deployment."""
