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
from inference_runtime.gateway.token_bucket import TokenBucket

BURST = 10
"""Wrong keys a client may send in a row before it is slowed."""
REFILL_S = 1.0
"""Seconds for one more try to come back once the burst is spent."""
_MAX_CLIENTS = 10_000
"""Clients tracked at once; past it those whose allowance is whole again are forgotten."""


class KeyThrottle:
    """Per client address: a bucket of :data:`BURST` tries, one back every :data:`REFILL_S`."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._clients: dict[str, TokenBucket] = {}

    def check(self, client: str) -> None:
        """Raise ``RateLimited`` while this client has no tries left."""
        allowance = self._clients.get(client)
        if allowance is None:
            return
        if allowance.refill(self._clock()) < 1.0:
            wait = allowance.wait()
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
            allowance = self._clients[client] = TokenBucket(
                capacity=float(BURST), per_second=1.0 / REFILL_S, now=self._clock()
            )
        allowance.level = max(0.0, allowance.refill(self._clock()) - 1.0)

    def _forget_whole(self) -> None:
        now = self._clock()
        for client in [c for c, a in self._clients.items() if a.refill(now) >= BURST]:
            del self._clients[client]
        if len(self._clients) >= _MAX_CLIENTS:  # all of them guessing: bound the memory anyway
            self._clients.clear()
