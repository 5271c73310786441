"""``RoutingBoard``: the routing board as a named Ray actor, a thin shell over ``BoardState``.

Every runtime of the cluster (the head and each gateway) syncs with it every
``cluster.sync_interval_s``: one call that pushes its changes and pulls everybody else's. The
board holds only soft state: every entry is republished by its writer, so a board that is lost
(its process or node died) is created again by the next runtime that misses it, and refilled
within a sync (its clients see a new ``incarnation`` and push and pull everything).

A plain Ray actor (one call at a time, so ``BoardState`` needs no lock), with no CPU reserved and
on the node of the runtime that created it (soft: anywhere else if that node is gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from inference_runtime.cluster.board import BoardState, SyncReply, Versioned

BOARD_NAME = "inference-routing-board"
"""The board's actor name in the runtime's Ray namespace (``cluster.namespace``)."""


class RoutingBoard:
    def __init__(self) -> None:
        self.state = BoardState()

    def sync(
        self, writer: str, delta: Mapping[str, Versioned], since: int, ttl_s: float
    ) -> SyncReply:
        """``ttl_s``: how long the board waits for this writer's next sync (its
        ``cluster.board_ttl_s``) before it removes the writer's entries."""
        return self.state.sync(writer, delta, since, ttl_s)

    def leave(self, writer: str) -> None:
        self.state.leave(writer)

    def expire(self) -> list[str]:
        return self.state.expire()


def board_handle() -> Any:
    """The board of this namespace; created (here) if there is none."""
    node = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(RoutingBoard)
        .options(
            name=BOARD_NAME,
            get_if_exists=True,
            num_cpus=0,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True),
        )
        .remote()
    )


__all__ = ["BOARD_NAME", "RoutingBoard", "board_handle"]
