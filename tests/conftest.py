"""The whole session runs in its own home: before any test module is imported (so before any
fixture, module-scoped ones included), ``HOME``, the XDG folders, Hugging Face's cache and the
runtime's data and cache folders point into a temporary folder; subprocesses inherit them.
At the end, the session fails if anything was written under the real home's folders that the
runtime or its libraries would use. Every test also gets its own data folder, so state
databases never leak between tests. ``ray_cluster``: the session's simulated Ray cluster (only
the tests that use it need Ray)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.isolation import BEFORE, REAL_HOME, snapshot


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    changed = sorted(
        path for path, state in snapshot(REAL_HOME).items() if BEFORE.get(path) != state
    )
    if changed:
        print(f"\nthe tests wrote under the real home {REAL_HOME}:")
        for path in changed[:20]:
            print(f"  {path}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("INFERENCE_RUNTIME_DATA_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A simulated Ray cluster for the whole session: a head that takes no replica (no CPUs)
    and two worker nodes with 2 CPUs and 2 (fake) GPUs each. Tests that add nodes remove them.
    Skips the test when Ray is not installed (the ``ray`` extra)."""
    ray = pytest.importorskip("ray")
    # on a loaded machine a node's agents may take a while to start (Ray's default wait
    # crashes the raylet); a cluster that still fails to start is tried again
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    cluster = None
    for attempt in range(3):
        try:
            cluster = _start_cluster()
            break
        except Exception:
            if attempt == 2:
                raise
    assert cluster is not None
    ray.init(address=cluster.address, namespace="inference-runtime-tests", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _start_cluster() -> Any:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=False,
        head_node_args={},
    )
    try:
        cluster.add_node(
            num_cpus=0,
            include_dashboard=False,
            # a node that goes away is declared dead within about 1.5 s
            _system_config={
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 500,
                "health_check_failure_threshold": 3,
                "agent_register_timeout_ms": 120_000,
            },
        )
        for _ in range(2):
            cluster.add_node(num_cpus=2, num_gpus=2)
        cluster.wait_for_nodes()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster
