"""``Secret``: an API key that never shows itself in a log, an error, a metric or a repr."""

from __future__ import annotations

import hashlib


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that needs it (an outgoing request header)."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """A short, stable, non-reversible name for the key (rate limits are shared per key)."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Secret(fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
