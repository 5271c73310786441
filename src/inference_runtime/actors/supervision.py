"""Supervision: what a parent does when a child fails.

A strategy maps the child's exception to a :class:`Directive` through its decider, and limits
restarts to ``max_restarts`` within a sliding window of ``within`` seconds. A failure that would
need one restart more than the window allows stops the child instead; the parent then receives
``ChildFailed`` and may escalate. ``OneForOneStrategy`` acts on the failing child alone,
``AllForOneStrategy`` on all of the parent's children.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inference_runtime.errors import ActorInitializationError


class Directive(enum.Enum):
    """What to do with a failed child."""

    RESUME = "resume"
    """Keep the instance and its state; go on with the next message."""
    RESTART = "restart"
    """Replace the instance with a fresh one from its Props; the mailbox is kept."""
    STOP = "stop"
    """Stop the child for good."""
    ESCALATE = "escalate"
    """Fail the parent with the same error, for the grandparent to decide."""


Decider = Callable[[BaseException], Directive]


def default_decider(error: BaseException) -> Directive:
    """Stop an actor that cannot start (restarting it would loop); restart on anything else."""
    if isinstance(error, ActorInitializationError):
        return Directive.STOP
    if isinstance(error, Exception):
        return Directive.RESTART
    return Directive.ESCALATE


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delay between consecutive restarts inside one window.

    The n-th restart in the current window (n from 1) waits
    ``min(max_s, min_s * multiplier ** (n - 1))``.
    """

    min_s: float = 0.1
    """Delay before the first restart of a window, in seconds."""
    max_s: float = 10.0
    """Upper bound of the delay, in seconds."""
    multiplier: float = 2.0
    """Growth factor from one restart to the next."""

    def __post_init__(self) -> None:
        if self.min_s < 0 or self.max_s < self.min_s or self.multiplier < 1:
            raise ValueError("Backoff needs 0 <= min_s <= max_s and multiplier >= 1")

    def delay(self, restart_number: int) -> float:
        return float(min(self.max_s, self.min_s * self.multiplier ** max(0, restart_number - 1)))


class RestartWindow:
    """The restarts of one child within a sliding time window.

    A failure at time ``t`` may restart the child iff fewer than ``max_restarts`` restarts happened
    in ``(t - within, t]``.
    """

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def try_restart(self, *, now: float, max_restarts: int, within: float) -> int | None:
        """Record a restart at ``now`` and return its number within the window, or ``None``."""
        times = self._times
        while times and times[0] <= now - within:
            times.popleft()
        if len(times) >= max_restarts:
            return None
        times.append(now)
        return len(times)

    def __len__(self) -> int:
        return len(self._times)


@dataclass(frozen=True)
class SupervisorStrategy:
    """Base of the two strategies; use :class:`OneForOneStrategy` or :class:`AllForOneStrategy`."""

    max_restarts: int = 3
    """Restarts allowed within the window; one more failure stops the child."""
    within: float = 60.0
    """Length of the sliding window, in seconds of the system's clock."""
    decider: Decider = field(default=default_decider)
    """Maps the child's exception to a directive."""
    backoff: Backoff | None = None
    """Optional delay between restarts; ``None`` restarts at once."""

    all_for_one = False

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.within <= 0:
            raise ValueError("within must be > 0 seconds")

    def decide(self, error: BaseException) -> Directive:
        return self.decider(error)


@dataclass(frozen=True)
class OneForOneStrategy(SupervisorStrategy):
    """The directive applies to the failing child only."""


@dataclass(frozen=True)
class AllForOneStrategy(SupervisorStrategy):
    """A restart or stop applies to every child of the parent."""

    all_for_one = True


DEFAULT_STRATEGY = OneForOneStrategy()
"""Restart on any exception, at most 3 times within 60 s; stop an actor that fails to start."""
