"""Budgets: rolling windows of spend per deployment, and worst-case reservations at admission.

A request reserves its worst-case cost (prompt plus ``max_tokens`` of completion) before it runs
and settles to its actual cost when it ends, so concurrent requests can never overshoot a budget
together: admission checks ``spent + reserved + this <= limit`` in every window. The worst case
must bound the real cost, or the settled spend passes the limit: the prompt is counted by
:func:`prompt_token_bound`, never estimated.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import msgspec

from inference_runtime.errors import BudgetExceeded
from inference_runtime.metrics.spend import InMemorySpendStore, SpendStore
from inference_runtime.types import Budget, EngineRequest

log = logging.getLogger("inference_runtime.metrics")

WINDOWS: Mapping[str, float] = MappingProxyType({"hour": 3600.0, "day": 86400.0})
"""The rolling windows, by name, in seconds."""

_TOLERANCE = 1e-9
"""Relative slack on limit comparisons, so float sums of prices do not refuse an exact fit."""

PER_MESSAGE_TOKENS = 8
"""Tokens a chat template adds around one message beyond the bytes of its role and name: its
special tokens (ChatML's ``<|im_start|>``/``<|im_end|>``, Llama 3's header ids and
``<|eot_id|>``: 2 to 4) and separators."""
PER_PROMPT_TOKENS = 64
"""Tokens a template or tokenizer adds once per prompt: BOS/EOS, the generation prompt, a
default system prompt where the template inserts one (SmolLM's and Qwen's: 20 to 30 tokens),
OpenAI's few reply-priming tokens."""

PER_INPUT_TOKENS = 4
"""Tokens an embedding model's tokenizer adds to one input: BERT's ``[CLS]``/``[SEP]``, a BOS/EOS
pair, SentencePiece's dummy prefix."""

_encode = msgspec.json.Encoder().encode


def text_token_bound(text: str) -> int:
    """Tokens ``text`` can be, whatever the tokenizer: its UTF-8 byte length. A byte-level BPE
    token (GPT's, Llama 3's, Qwen's, SmolLM's) is at least one byte; SentencePiece with byte
    fallback gives at most one token per byte of a character too (plus its dummy prefix, which
    the per-prompt allowance covers); the fake runner's words are at least one byte each."""
    return len(text.encode("utf-8", "surrogatepass"))


def input_token_bound(item: str | tuple[int, ...]) -> int:
    """An upper bound on the tokens of one embedding input: a text's bytes, or the ids given,
    plus the special tokens its tokenizer adds."""
    size = text_token_bound(item) if isinstance(item, str) else len(item)
    return size + PER_INPUT_TOKENS


def prompt_token_bound(request: EngineRequest) -> int:
    """An upper bound on the prompt tokens one choice of ``request`` is charged (every choice
    shares them): the bytes of its text, plus what a chat template may add per message and per
    prompt. A body forwarded to a provider (``passthrough``: tools and every other field it
    counts as prompt) is bounded by its own JSON bytes, if that is more."""
    if request.messages is None:
        bound = text_token_bound(request.prompt or "")
    else:
        bound = sum(
            text_token_bound(m.text()) + text_token_bound(m.role + (m.name or ""))
            + PER_MESSAGE_TOKENS
            for m in request.messages
        )  # fmt: skip
    if request.passthrough is not None:
        bound = max(bound, len(_encode(request.passthrough)))
    return bound + PER_PROMPT_TOKENS


def _limits(budget: Budget) -> tuple[tuple[str, float], ...]:
    pairs = (("hour", budget.max_spend_per_hour), ("day", budget.max_spend_per_day))
    return tuple((window, limit) for window, limit in pairs if limit is not None)


@dataclass(frozen=True, slots=True)
class Admission:
    """A granted reservation; ``warning`` says which windows it overshoots (``warn`` budgets)."""

    reservation: int
    warning: str | None = None


@dataclass(slots=True)
class _Reservation:
    deployment: str
    amount: float
    at: float


class BudgetLedger:
    """Spend windows, reservations and admission for every deployment (one writer: not
    thread-safe; the ``MetricsActor`` owns it).

    ``now`` is the time source in seconds (the actor system's clock). A reservation not settled
    within ``reservation_ttl`` seconds (its request vanished) is released by :meth:`prune`.
    """

    def __init__(
        self,
        now: Callable[[], float],
        store: SpendStore | None = None,
        *,
        reservation_ttl: float = 3600.0,
    ) -> None:
        self._now = now
        self._store: SpendStore = store if store is not None else InMemorySpendStore()
        self._ttl = reservation_ttl
        self._budgets: dict[str, Budget] = {}
        self._reservations: dict[int, _Reservation] = {}
        self._reserved: dict[str, float] = {}
        self._open: dict[str, int] = {}
        self._ids = itertools.count(1)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, deployment: str, budget: Budget | None) -> None:
        if budget is None:
            self._budgets.pop(deployment, None)
        else:
            self._budgets[deployment] = budget

    def budget(self, deployment: str) -> Budget | None:
        return self._budgets.get(deployment)

    def remove(self, deployment: str) -> None:
        """Forget a deployment: its budget, spend and reservations."""
        self._budgets.pop(deployment, None)
        self._store.forget(deployment)
        for key in [k for k, r in self._reservations.items() if r.deployment == deployment]:
            del self._reservations[key]
        self._reserved.pop(deployment, None)
        self._open.pop(deployment, None)

    # -- admission and settlement ----------------------------------------------------------

    def reserve(self, deployment: str, amount: float) -> Admission:
        """Reserve ``amount`` (the request's worst-case cost) against the deployment's budget.

        Raises ``BudgetExceeded`` when a window has no room and the budget says ``reject`` or
        ``throttle`` (a throttling caller waits ``retry_after`` seconds and asks again). With
        ``warn`` the reservation is granted and :attr:`Admission.warning` tells why.
        """
        budget = self._budgets.get(deployment)
        if budget is None or amount <= 0:
            return Admission(next(self._ids))  # the cheap path: nothing to enforce
        now = self._now()
        reserved = self._reserved.get(deployment, 0.0)
        over: list[tuple[str, float, float, float]] = []
        for window, limit in _limits(budget):
            spent = self._store.spent_since(deployment, now - WINDOWS[window])
            excess = spent + reserved + amount - limit
            if excess <= limit * _TOLERANCE:
                continue
            if amount > limit:  # no wait can help: the request alone is over the limit
                wait = WINDOWS[window]
            elif reserved + amount > limit:  # requests in flight hold the room; they settle soon
                wait = 1.0
            else:
                wait = self._retry_after(deployment, window, now, excess)
            over.append((window, limit, spent, wait))
        described = "; ".join(
            f"{window} window: spent {spent:.6g} + reserved {reserved:.6g} + this request "
            f"{amount:.6g} > limit {limit:.6g}"
            + (
                " (this request alone is over the limit: lower max_tokens)"
                if amount > limit
                else ""
            )
            for window, limit, spent, _ in over
        )
        if over and budget.on_exceeded != "warn":
            retry_after = max(wait for *_, wait in over)
            raise BudgetExceeded(
                f"budget of deployment '{deployment}' exceeded ({described})",
                retry_after=retry_after,
            )
        reservation = next(self._ids)
        self._reservations[reservation] = _Reservation(deployment, amount, now)
        self._reserved[deployment] = reserved + amount
        self._open[deployment] = self._open.get(deployment, 0) + 1
        return Admission(reservation, described or None)

    def _retry_after(self, deployment: str, window: str, now: float, excess: float) -> float:
        """Seconds until ``excess`` of settled spend has left ``window`` (at least 1)."""
        length = WINDOWS[window]
        at = self._store.release_time(deployment, now - length, excess)
        return max(1.0, length if at is None else at + length - now)

    def settle(self, reservation: int | None, deployment: str, cost: float) -> None:
        """Release ``reservation`` (unknown or expired ids are ignored) and charge ``cost``."""
        if reservation is not None:
            self.release(reservation)
        if cost > 0:
            self._store.add(deployment, self._now(), cost)

    def release(self, reservation: int) -> None:
        """Drop a reservation without charging anything (the request never ran)."""
        held = self._reservations.pop(reservation, None)
        if held is None:
            return
        left = self._open.get(held.deployment, 0) - 1
        if left <= 0:  # reset exactly, so float drift cannot accumulate
            self._open.pop(held.deployment, None)
            self._reserved.pop(held.deployment, None)
        else:
            self._open[held.deployment] = left
            self._reserved[held.deployment] = max(
                0.0, self._reserved[held.deployment] - held.amount
            )

    # -- upkeep and views ------------------------------------------------------------------

    def prune(self) -> int:
        """Forget spend older than every window and release expired reservations; returns how
        many reservations expired."""
        now = self._now()
        self._store.prune(now - max(WINDOWS.values()))
        stale = [key for key, held in self._reservations.items() if now - held.at >= self._ttl]
        for key in stale:
            held = self._reservations[key]
            log.warning(
                "reservation %d of deployment %s (%.6g) was never settled; released",
                key,
                held.deployment,
                held.amount,
            )
            self.release(key)
        return len(stale)

    def spent(self, deployment: str) -> dict[str, float]:
        """Settled spend per window name, as of now."""
        now = self._now()
        return {w: self._store.spent_since(deployment, now - s) for w, s in WINDOWS.items()}

    def reserved(self, deployment: str) -> float:
        return self._reserved.get(deployment, 0.0)

    def open_reservations(self, deployment: str) -> int:
        return self._open.get(deployment, 0)

    def deployments(self) -> frozenset[str]:
        return frozenset(self._budgets) | self._store.deployments() | frozenset(self._open)
