"""Retry on another replica before the first token; graceful drain of a real server process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai
import yaml

from inference_runtime import (
    ActorSystem,
    DeploymentManagerActor,
    DpCoordinatorActor,
    GatewayConfig,
    MetricsActor,
    Props,
    spawn_gateway,
)
from inference_runtime.cluster import ApplyDeployment, GetRoutingTable
from inference_runtime.gateway import GetAddress
from inference_runtime.testing import FakeRunner
from inference_runtime.types import Deployment, ReplicaState


async def test_idempotent_request_retried_on_another_replica() -> None:
    built: list[FakeRunner] = []

    def factory(dep: Deployment, **_: object) -> FakeRunner:
        # the first replica's runner is poisoned by "MAYBE"; the second one is not
        config = {**dep.runtime_config, "poison_marker": "MAYBE"} if not built else {}
        runner = FakeRunner(Deployment.from_dict({**dep.to_dict(), "runtime_config": config}))
        built.append(runner)
        return runner

    system = ActorSystem.create("retry")
    dp = system.actor_of(Props(DpCoordinatorActor), "dp")
    metrics = system.actor_of(Props(MetricsActor), "metrics")
    mgr = system.actor_of(
        Props(
            lambda: DeploymentManagerActor(coordinator=dp, metrics=metrics, runner_factory=factory)
        ),
        "mgr",
    )
    gateway = spawn_gateway(system, GatewayConfig(port=0), dp)
    try:
        await mgr.ask(ApplyDeployment(Deployment(name="d", runtime="fake", replicas=2)))
        host, port = await gateway.ask(GetAddress())
        for _ in range(200):
            rows = (await dp.ask(GetRoutingTable())).deployments.get("d", ())
            if sum(r.state is ReplicaState.HEALTHY for r in rows) == 2:
                break
            await asyncio.sleep(0.01)
        async with openai.AsyncOpenAI(
            base_url=f"http://{host}:{port}/v1", api_key="x", max_retries=0
        ) as api:
            for i in range(4):
                reply = await api.chat.completions.with_raw_response.create(
                    model="d", messages=[{"role": "user", "content": f"MAYBE {i}"}], max_tokens=3
                )
                assert reply.headers["x-replica-id"] == "d#1"
                assert reply.parse().usage.completion_tokens == 3
        assert built[0].rebuilds >= 1  # the poisoned replica was tried, failed, and restarted
    finally:
        await system.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    port = _free_port()
    config = {
        "gateway": {"host": "127.0.0.1", "port": port, "drain_timeout_s": 20},
        "deployments": [
            {
                "name": "slow",
                "runtime": "fake",
                "runtime_config": {"token_latency_ms": 10, "output_tokens": 1000},
            }
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "inference_runtime.cli.main", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "INFERENCE_RUNTIME_LOG_LEVEL": "INFO"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            body: dict[str, Any] = {
                "model": "slow",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 50,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            async with http.post(url + "/v1/chat/completions", json=body) as response:
                await response.content.readline()
                process.send_signal(signal.SIGTERM)
                usage = None
                async for line in response.content:
                    if line.startswith(b"data: {"):
                        frame = json.loads(line[6:])
                        usage = frame.get("usage") or usage
        assert usage is not None
        assert usage["completion_tokens"] == 50  # finished despite the SIGTERM
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        assert b"event loop: uvloop" in process.stdout.read()  # the default, where installed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
