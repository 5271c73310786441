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
import pytest
import yaml

from support.runtime import USER, client, fake, serve, table, wait_healthy


async def test_innocents_of_a_failed_step_are_retried_and_its_culprit_is_final() -> None:
    """A whole (non-streamed) reply that was generating when another request poisoned its
    replica is retried on the other replica (its buffered tokens never reached the client);
    the poisoning request, alone in its step, is answered with a final 500 (not retried onto
    the other replica, which stays untouched)."""
    dep = fake(
        replicas=2,
        poison_marker="MAYBE",
        token_latency_ms=5,
        output_tokens=10_000,
        routing="session_affinity",
    )
    async with serve(dep) as runtime:
        await wait_healthy(runtime, "fake", 2)
        api = client(runtime, timeout=30)
        sticky = {"X-Session-Id": "one-replica"}
        innocent = asyncio.ensure_future(
            api.chat.completions.with_raw_response.create(
                model="fake", messages=USER, max_tokens=400, extra_headers=sticky
            )
        )
        for _ in range(2000):  # until the innocent runs (and has produced tokens)
            rows = (await table(runtime)).deployments["fake"]
            busy = [r for r in rows if r.running]
            if busy:
                break
            await asyncio.sleep(0.005)
        [victim] = busy
        with pytest.raises(openai.InternalServerError) as culprit:
            await api.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": "MAYBE"}],
                max_tokens=3,
                extra_headers=sticky,
            )
        assert culprit.value.body["code"] == "request_failed_replica"  # type: ignore[index]
        reply = await innocent
        assert reply.headers["x-replica-id"] != victim.replica_id
        assert reply.parse().usage.completion_tokens == 400
        rows = {r.replica_id: r for r in (await table(runtime)).deployments["fake"]}
        other = next(rid for rid in rows if rid != victim.replica_id)
        assert rows[other].context_restarts == 0  # the culprit never reached it


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
