"""The routing board's CRDT without Ray: the last-writer-wins map merges commutatively,
associatively and idempotently (ties broken by writer id, the same everywhere); the board
numbers changes for pulls and drops silent writers; a client pushes only its changes,
re-asserts keys the board took from it, and starts over with a new board."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from inference_runtime.cluster.board import (
    BOARD_WRITER,
    BoardClient,
    BoardState,
    LwwMap,
    Versioned,
)

KEYS = st.sampled_from(["a", "b", "c"])
WRITERS = st.sampled_from(["gw1", "gw2", "head"])


@st.composite
def writes(draw: st.DrawFn) -> list[tuple[str, Versioned]]:
    """Writes as writers make them: one writer never stamps two writes alike, so a
    (version, writer) pair always carries the same value (a function of the stamp here)."""
    items = draw(st.lists(st.tuples(KEYS, st.integers(0, 6), WRITERS), max_size=12))
    return [
        (key, Versioned(version, writer, None if version == 0 else f"{writer}{version}{key}"))
        for key, version, writer in items
    ]


def lww(items: list[tuple[str, Versioned]]) -> LwwMap:
    result = LwwMap()
    for key, entry in items:
        result.merge({key: entry})
    return result


def merged(*maps: LwwMap) -> LwwMap:
    result = LwwMap()
    for other in maps:
        result.merge(other.entries)
    return result


@given(writes(), writes())
def test_merge_is_commutative(a: Any, b: Any) -> None:
    assert merged(lww(a), lww(b)) == merged(lww(b), lww(a))


@given(writes(), writes(), writes())
def test_merge_is_associative(a: Any, b: Any, c: Any) -> None:
    left = merged(merged(lww(a), lww(b)), lww(c))
    right = merged(lww(a), merged(lww(b), lww(c)))
    assert left == right


@given(writes(), writes())
def test_merge_is_idempotent_and_order_free(a: Any, b: Any) -> None:
    once = merged(lww(a), lww(b))
    assert merged(once, lww(b), lww(a)) == once
    assert lww(a + b) == lww(list(reversed(a + b))) == once


def test_the_later_version_wins_and_a_tie_goes_to_the_greater_writer() -> None:
    m = LwwMap()
    m.merge({"k": Versioned(2, "gw2", "old")})
    assert m.merge({"k": Versioned(1, "zz", "older")}) == []
    assert m.merge({"k": Versioned(3, "aa", "new")}) == ["k"]
    tie = [Versioned(5, "gw1", "one"), Versioned(5, "gw2", "two")]
    for order in (tie, list(reversed(tie))):
        copy = LwwMap()
        for entry in order:
            copy.merge({"k": entry})
        assert copy.get("k") == "two"


def test_a_write_after_a_merge_wins_over_what_was_merged() -> None:
    m = LwwMap()
    m.merge({"k": Versioned(41, "zz", "theirs")})
    entry = m.set("k", "mine", writer="aa")  # the Lamport clock moved past 41
    assert entry.version == 42 and m.get("k") == "mine"
    m.set("k", None, writer="aa")
    assert m.get("k") is None and list(m.live()) == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_board_answers_what_changed_since_a_pull() -> None:
    board = BoardState(clock=Clock())
    first = board.sync("head", {"a": Versioned(1, "head", 1), "b": Versioned(2, "head", 2)}, 0, 5)
    assert set(first.entries) == {"a", "b"} and first.seq == 2
    again = board.sync("gw", {"c": Versioned(1, "gw", 3)}, first.seq, 5)
    assert set(again.entries) == {"c"} and again.entries["c"][1] == 3
    stale = board.sync("gw", {"a": Versioned(1, "head", 1)}, again.seq, 5)
    assert stale.entries == {} and stale.seq == 3  # nothing new: no change numbered


def test_a_silent_writer_loses_its_entries_after_its_ttl_and_one_that_leaves_at_once() -> None:
    clock = Clock()
    board = BoardState(clock=clock)
    board.sync("gw1", {"inflight/gw1": Versioned(1, "gw1", {"n": 1})}, 0, 1.0)
    board.sync("gw2", {"inflight/gw2": Versioned(1, "gw2", {"n": 2})}, 0, 10.0)
    board.sync("head", {"replica/x": Versioned(1, "head", {"host": "h"})}, 0, 1.0)
    clock.now = 0.9
    board.sync("head", {}, 0, 1.0)
    assert board.map.get("inflight/gw1") == {"n": 1}
    clock.now = 1.5
    reply = board.sync("head", {}, 3, 1.0)
    assert board.map.get("inflight/gw1") is None  # gw1 went silent: its ttl passed
    assert reply.entries["inflight/gw1"][0].writer == BOARD_WRITER
    assert board.map.get("inflight/gw2") == {"n": 2} and board.map.get("replica/x")
    board.leave("gw2")
    assert board.map.get("inflight/gw2") is None


def sync(client: BoardClient, board: BoardState, values: dict[str, Any]) -> bool:
    sent = client.publish(values)
    return client.pulled(sent, board.sync(client.writer, sent, client.since, 5.0))


def test_a_client_pushes_only_what_changed_and_deletes_what_is_gone() -> None:
    board = BoardState(clock=Clock())
    client = BoardClient("gw")
    assert client.publish({"a": 1, "b": 2}) == {}  # nothing before the first pull
    assert client.pulled({}, board.sync("gw", {}, 0, 5.0))
    assert set(client.publish({"a": 1, "b": 2})) == {"a", "b"}
    assert sync(client, board, {"a": 1, "b": 2})
    assert client.publish({"a": 1, "b": 3}).keys() == {"b"}
    assert sync(client, board, {"a": 1})
    assert board.map.get("b") is None and board.map.get("a") == 1
    assert client.pending == {}


def test_a_client_re_asserts_its_keys_and_starts_over_with_a_new_board() -> None:
    clock = Clock()
    board = BoardState(clock=clock)
    client = BoardClient("gw")
    sync(client, board, {"mine": 1})
    sync(client, board, {"mine": 1})
    assert board.map.get("mine") == 1
    clock.now = 10.0
    board.expire()  # the board took it (the client was slow)
    assert board.map.get("mine") is None
    sync(client, board, {"mine": 1})  # pulls the deletion: writes it again
    sync(client, board, {"mine": 1})
    assert board.map.get("mine") == 1

    fresh = BoardState(clock=clock)  # the board was lost and created again
    assert not sync(client, fresh, {"mine": 1})
    assert client.since == 0 and "mine" in client.pending
    assert sync(client, fresh, {"mine": 1})
    assert fresh.map.get("mine") == 1
