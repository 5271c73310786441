"""``inference-runtime status`` shows a failing replica's whole reason, not only the start of it
that fits the table."""

from __future__ import annotations

import pytest

from inference_runtime.cli.admin import _print_status

REASON = (
    "engine actor failed: ActorInitializationError('actor /user/mgr/gpt_0-3/worker/ctx failed "
    "to start: ValueError(api_key_env: the environment variable TEAM_KEY is not set)')"
)


def test_status_prints_the_whole_reason(capsys: pytest.CaptureFixture[str]) -> None:
    replica = {
        "id": "gpt#0",
        "phase": "failed",
        "state": "failed",
        "placement": None,
        "in_flight": 0,
        "restarts": 0,
        "failures": 3,
        "moves": 0,
        "last_error": REASON,
    }
    view = {
        "name": "gpt",
        "runtime": "openai",
        "model": "gpt",
        "replicas": {"ready": 0, "desired": 1},
        "state": "degraded",
        "source": "api",
        "message": None,
        "replica_list": [replica],
    }
    _print_status({"status": "degraded", "nodes": {}}, [view])
    out = capsys.readouterr().out
    assert f"gpt#0 failed: {REASON}" in out
