"""``Redactor``: the credentials a session holds, kept out of every upstream-derived string.

Matching key *shapes* (``sk-...``, see :func:`upstream_errors.redact`) misses a key of another
shape (``tok_...``) and one echoed in ``param`` or ``code``; a redactor knows the exact values
instead, and removes each of them and any part of one longer than ``WINDOW - 1`` characters
(an upstream that echoes half a key still leaks half a key). Every 9-character window of each
secret goes into a set; a string is scanned once, a set lookup per position, and every hit is
replaced. Case does not hide a secret (an upstream that upper-cases what it echoes): windows
are kept and looked up in lower case. Error strings are short and this runs only on them, never
per token.
"""

from __future__ import annotations

from collections.abc import Iterable

from inference_runtime.remote.upstream_errors import redact

WINDOW = 9
"""Shortest part of a secret that is redacted: any run of this many of its characters."""
MIN_EXACT = 4
"""A secret shorter than ``WINDOW`` is redacted as a whole, if it is at least this long (a
one-letter test key would otherwise eat every such letter of every message)."""
MASK = "[redacted]"


def _lower(text: str) -> str:
    """``text`` in lower case, position for position (a character whose lower case is longer,
    as some outside ASCII are, is kept as it is)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class Redactor:
    __slots__ = ("_exact", "_windows")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._windows: frozenset[str] = frozenset()
        self._exact: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Redact these too (a rotated key: requests in flight still carry the old one)."""
        windows = set(self._windows)
        exact = list(self._exact)
        for secret in secrets:
            secret = secret.lower()
            if len(secret) >= WINDOW:
                windows.update(secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1))
            elif len(secret) >= MIN_EXACT and secret not in exact:
                exact.append(secret)
        self._windows = frozenset(windows)
        self._exact = tuple(sorted(exact, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """``text`` with every known secret (or part of one) and every key-shaped string
        replaced by ``[redacted]``."""
        text = redact(text)
        windows = self._windows
        if windows and len(text) >= WINDOW:
            text = self._mask_windows(text, windows)
        for secret in self._exact:
            lowered = _lower(text)
            at = lowered.find(secret)
            while at >= 0:
                text = text[:at] + MASK + text[at + len(secret) :]
                at = _lower(text).find(secret, at + len(MASK))
        return text

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)

    @staticmethod
    def _mask_windows(text: str, windows: frozenset[str]) -> str:
        spans: list[list[int]] = []
        lowered = _lower(text)
        for start in range(len(text) - WINDOW + 1):
            if lowered[start : start + WINDOW] in windows:
                end = start + WINDOW
                if spans and start <= spans[-1][1]:
                    spans[-1][1] = end  # overlapping windows: one longer part of a secret
                else:
                    spans.append([start, end])
        if not spans:
            return text
        pieces, last = [], 0
        for start, end in spans:
            pieces.append(text[last:start])
            pieces.append(MASK)
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def scrub(self, error: BaseException) -> BaseException:
        """``error`` (one just made from what the upstream said) with its message and every
        string attribute (``param``, ``code``) redacted in place; its cause, which may quote
        the upstream unredacted, is dropped."""
        error.args = tuple(self(a) if isinstance(a, str) else a for a in error.args)
        for name, value in vars(error).items():
            if isinstance(value, str):
                setattr(error, name, self(value))
        error.__cause__ = None
        error.__context__ = None
        error.__suppress_context__ = True
        return error
