"""Slowing down key guessing: wrong keys are counted per client address, and past a burst that
client's key checks answer 429 until its allowance refills.

While a client is held back every key it sends is refused, the right one too: answering a
correct guess would let guessing go on at full speed. Clients at other addresses are not
affected. (Behind a reverse proxy every client has the proxy's address; there the proxy is the
place to limit.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from inference_runtime.errors import RateLimited

BURST = 10
"""Wrong keys a client may send in a row before it is slowed."""
REFILL_S = 1.0
"""Seconds for one more try to come back once the burst is spent."""
_MAX_CLIENTS = 10_000
"""Clients tracked at once; past it those whose allowance is whole again are forgotten."""


class _Allowance:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class KeyThrottle:
    """Per client address: a bucket of :data:`BURST` tries, one back every :data:`REFILL_S`."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._clients: dict[str, _Allowance] = {}

    def check(self, client: str) -> None:
        """Raise ``RateLimited`` while this client has no tries left."""
        allowance = self._clients.get(client)
        if allowance is None:
            return
        level = self._refill(allowance)
        if level < 1.0:
            wait = (1.0 - level) * REFILL_S
            raise RateLimited(
                f"too many wrong keys from this client; retry in {math.ceil(wait)} s",
                retry_after=wait,
            )

    def failed(self, client: str) -> None:
        """Count one wrong key from this client."""
        allowance = self._clients.get(client)
        if allowance is None:
            if len(self._clients) >= _MAX_CLIENTS:
                self._forget_whole()
            allowance = self._clients[client] = _Allowance(float(BURST), self._clock())
        allowance.level = max(0.0, self._refill(allowance) - 1.0)

    def _refill(self, allowance: _Allowance) -> float:
        now = self._clock()
        allowance.level = min(float(BURST), allowance.level + (now - allowance.stamp) / REFILL_S)
        allowance.stamp = now
        return allowance.level

    def _forget_whole(self) -> None:
        for client in [c for c, a in self._clients.items() if self._refill(a) >= BURST]:
            del self._clients[client]
        if len(self._clients) >= _MAX_CLIENTS:  # all of them guessing: bound the memory anyway
            self._clients.clear()
