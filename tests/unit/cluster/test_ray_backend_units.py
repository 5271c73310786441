"""The Ray backend's plain parts: errors across the boundary, Ray's nodes as the inventory.
Skipped without Ray (importing the backend imports it)."""

from __future__ import annotations

import pytest

from inference_runtime import errors

pytest.importorskip("ray")

from inference_runtime.cluster.ray import nodes_from_ray
from inference_runtime.cluster.ray.wire import decode_error, encode_error


@pytest.mark.parametrize(
    "error",
    [
        errors.Backpressure("full", retry_after=2.5),
        errors.ContextLengthExceeded(prompt_tokens=10, max_tokens=5, max_context=8),
        errors.UnsupportedParameter("presence_penalty", "not supported"),
        errors.ReplicaFailed("gone", retry_after=3.0),
        errors.OutOfMemory("oom", sequence_ids=("a", "b")),
        errors.MailboxFull("/user/x", 16),
        errors.ModelNotFound("m"),
        ValueError("plain"),
    ],
)
def test_errors_cross_the_boundary_with_their_class_and_fields(error: BaseException) -> None:
    back = decode_error(encode_error(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert vars(back) == vars(error)
    if isinstance(error, errors.InferenceRuntimeError):
        assert back.retryable == error.retryable  # type: ignore[attr-defined]


def test_an_error_of_another_package_arrives_as_a_runtime_error() -> None:
    class Odd(Exception):
        pass

    back = decode_error(encode_error(Odd("strange")))
    assert isinstance(back, RuntimeError)
    assert "Odd: strange" in str(back)


def test_ray_nodes_become_the_inventory() -> None:
    nodes = [
        {"NodeID": "b", "Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0, "memory": 2**34,
                                                     "accelerator_type:H100": 1.0}},
        {"NodeID": "head", "Alive": True, "Resources": {"memory": 2**33}},  # --num-cpus=0
        {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 8.0}},
        {"NodeID": "a", "Alive": True, "Resources": {"CPU": 0.5}},
    ]  # fmt: skip
    inventory = nodes_from_ray(nodes, min_cpus=1.0)
    assert [n.node_id for n in inventory] == ["b"]
    (node,) = inventory
    assert (node.cpus, node.memory_mib) == (8, 16384)
    assert [(g.index, g.name, g.memory_total_mib) for g in node.gpus] == [
        (0, "H100", 0),
        (1, "H100", 0),
    ]
    assert [n.node_id for n in nodes_from_ray(nodes, min_cpus=0.5)] == ["a", "b"]
