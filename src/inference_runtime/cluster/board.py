"""The routing board's data: a versioned last-writer-wins map (the seed's "routing CRDT").

Plain classes, no actors and no I/O, so the merge rules are unit-tested directly; the Ray actor
that holds the shared copy (``cluster.ray.board``) and the runtimes' sync actors are shells.

:class:`LwwMap` is a state-based CRDT: every key holds a :class:`Versioned` value, and merging
keeps, per key, the one with the greater ``(version, writer)``. Versions come from a Lamport
clock (each write takes one more than the greatest version the writer has seen), so a write made
after seeing another wins over it; concurrent writes of one key are ordered by writer id, the
same way everywhere. Merge is therefore commutative, associative and idempotent: replicas that
have merged the same writes hold the same map, whatever the order the writes came in. A delete
is a write of ``None`` (a tombstone), so it merges like any other write.

:class:`BoardState` is the shared copy: it numbers every change (``seq``) so that a runtime pulls
only what changed since its last pull, and it removes the entries of writers that went silent
(a gateway that died without saying goodbye).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

BOARD_WRITER = "~board"
"""The writer id of the board's own writes (tombstones of expired writers)."""


@dataclass(frozen=True, slots=True)
class Versioned:
    """One key's value with its stamp. ``value`` ``None``: the key was deleted (a tombstone).
    A writer never gives two writes the same version, so ``(version, writer)`` names a write."""

    version: int
    writer: str
    value: Any

    def beats(self, other: Versioned) -> bool:
        """True when this write wins over ``other`` (the later version; a tie goes to the
        greater writer id, so every replica breaks it the same way)."""
        return (self.version, self.writer) > (other.version, other.writer)


class LwwMap:
    """A last-writer-wins map; ``clock`` is the Lamport clock of this copy's writes."""

    __slots__ = ("clock", "entries")

    def __init__(self, entries: Mapping[str, Versioned] | None = None) -> None:
        self.entries: dict[str, Versioned] = {}
        self.clock = 0
        if entries:
            self.merge(entries)

    def get(self, key: str) -> Any:
        """The live value of ``key`` (``None`` when absent or deleted)."""
        entry = self.entries.get(key)
        return None if entry is None else entry.value

    def live(self, prefix: str = "") -> Iterator[tuple[str, Versioned]]:
        """The keys (starting with ``prefix``) that hold a value, with their entries."""
        for key, entry in self.entries.items():
            if entry.value is not None and key.startswith(prefix):
                yield key, entry

    def set(self, key: str, value: Any, *, writer: str) -> Versioned:
        """Write ``value`` (``None`` deletes) as ``writer``, stamped after everything seen."""
        self.clock += 1
        entry = Versioned(self.clock, writer, value)
        self.entries[key] = entry
        return entry

    def merge(self, other: Mapping[str, Versioned]) -> list[str]:
        """Take every entry of ``other`` that beats ours; returns the keys that changed."""
        changed = []
        entries = self.entries
        for key, theirs in other.items():
            ours = entries.get(key)
            if ours is None or theirs.beats(ours):
                entries[key] = theirs
                changed.append(key)
            if theirs.version > self.clock:
                self.clock = theirs.version
        return changed

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LwwMap) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"LwwMap({len(self.entries)} entries, clock={self.clock})"


@dataclass(frozen=True, slots=True)
class SyncReply:
    """What the board answers a sync: the entries that changed after ``since`` with the
    sequence number of their last change, the board's sequence now, and the board's
    ``incarnation`` (a new board starts its sequence again: its clients then pull all)."""

    entries: dict[str, tuple[Versioned, int]]
    seq: int
    incarnation: str


class BoardState:
    """The shared copy. Each :meth:`sync` is a heartbeat of its writer, which says how long
    to wait for the next (``ttl_s``); a writer silent for longer has its live entries deleted
    (stamped by :data:`BOARD_WRITER`, so a writer that was only slow writes them again: its
    own keys overwritten by someone else are re-asserted, see :class:`BoardClient`)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.map = LwwMap()
        self.seq = 0
        self.changed_at: dict[str, int] = {}
        self.deadlines: dict[str, float] = {}
        self.clock = clock
        self.incarnation = uuid.uuid4().hex

    def sync(
        self, writer: str, delta: Mapping[str, Versioned], since: int, ttl_s: float
    ) -> SyncReply:
        """Merge ``writer``'s changes, then answer what changed after ``since``."""
        self.deadlines[writer] = self.clock() + ttl_s
        self._changed(self.map.merge(delta))
        self.expire()
        entries = {
            key: (self.map.entries[key], seq) for key, seq in self.changed_at.items() if seq > since
        }
        return SyncReply(entries, self.seq, self.incarnation)

    def leave(self, writer: str) -> None:
        """``writer`` stops: its entries go at once (not after the ttl)."""
        self.deadlines.pop(writer, None)
        self._drop(writer)

    def expire(self) -> list[str]:
        """Drop the entries of writers silent past their ttl; returns those writers."""
        now = self.clock()
        silent = [writer for writer, deadline in self.deadlines.items() if deadline < now]
        for writer in silent:
            self.leave(writer)
        return silent

    def _drop(self, writer: str) -> None:
        gone = [key for key, entry in self.map.live() if entry.writer == writer]
        for key in gone:
            self.map.set(key, None, writer=BOARD_WRITER)
        self._changed(gone)

    def _changed(self, keys: list[str]) -> None:
        for key in keys:
            self.seq += 1
            self.changed_at[key] = self.seq


class BoardClient:
    """One writer's side of the board: its copy of the map, the keys it owns, what it has
    written and not yet pushed, and how far it has pulled.

    The writer states the whole set of keys it owns at each :meth:`publish` (not diffs): the
    client writes only what changed and deletes what is gone, and writes again any of its keys
    that someone else overwrote (the board deletes a silent writer's keys; a writer that was
    only slow puts them back)."""

    def __init__(self, writer: str) -> None:
        self.writer = writer
        self.map = LwwMap()
        self.mine: dict[str, Any] = {}
        self.pending: dict[str, Versioned] = {}
        self.since = 0
        self.seqs: dict[str, int] = {}
        """The board's sequence number of each key's last change, as pulled."""
        self.incarnation: str | None = None

    def publish(self, values: Mapping[str, Any]) -> dict[str, Versioned]:
        """``values``: every key this writer owns now (``None`` values are not allowed: omit
        the key). Returns what to push (all writes not yet acknowledged); nothing before the
        first pull, so that a writer that comes back first learns the versions it must beat."""
        mine = self.mine
        for key, value in values.items():
            if key not in mine or mine[key] != value:
                self._write(key, value)
        for key in [k for k in mine if k not in values]:
            self._write(key, None)
        self.mine = dict(values)
        return dict(self.pending) if self.incarnation is not None else {}

    def pulled(self, sent: Mapping[str, Versioned], reply: SyncReply) -> bool:
        """Apply the board's answer to a sync that pushed ``sent``. False when the board is a
        new one (it restarted): the answer may then miss entries, so this client pulls all
        and pushes all its keys again at the next sync, and its view is not to be used now."""
        for key, entry in sent.items():
            if self.pending.get(key) is entry:
                del self.pending[key]
        if self.incarnation is not None and reply.incarnation != self.incarnation:
            self.incarnation = reply.incarnation
            clock = self.map.clock  # versions only grow, whichever board holds them
            self.map, self.seqs, self.since = LwwMap(), {}, 0
            self.map.clock = clock
            for key, value in self.mine.items():
                self._write(key, value)
            return False
        self.incarnation = reply.incarnation
        self.map.merge({key: entry for key, (entry, _) in reply.entries.items()})
        for key, (_, seq) in reply.entries.items():
            self.seqs[key] = seq
        self.since = reply.seq
        for key, value in self.mine.items():
            ours = self.map.entries.get(key)
            if ours is None or ours.writer != self.writer:
                self._write(key, value)  # overwritten by the board: we are alive, say so again
        return True

    def _write(self, key: str, value: Any) -> None:
        self.pending[key] = self.map.set(key, value, writer=self.writer)


__all__ = ["BOARD_WRITER", "BoardClient", "BoardState", "LwwMap", "SyncReply", "Versioned"]
