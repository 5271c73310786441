"""``TokenBucket``: ``capacity`` tries that come back at ``per_second``; the one arithmetic
behind an API key's requests per minute and a client's allowance of wrong keys."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("capacity", "level", "per_second", "stamp")

    def __init__(self, *, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.level = capacity
        self.stamp = now

    def refill(self, now: float) -> float:
        """The tries there are at ``now``."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.per_second)
        self.stamp = now
        return self.level

    def wait(self) -> float:
        """Seconds until one whole try is back (0 when there is one)."""
        return max(0.0, (1.0 - self.level) / self.per_second)
