"""How long one request can stall the gateway's event loop: a probe pings ``/healthz`` while a
big request runs, and reports the slowest answer.

Run ``python bench/loop_stall.py``. It starts ``inference-runtime serve`` in its own process on
127.0.0.1 (data in a temporary folder) with one ``runtime: fake`` deployment whose context and
queue take what each scenario sends, then for each scenario: a probe sends ``GET /healthz``
back to back on its own connection (a healthy loop answers it in well under a millisecond),
while one client sends the scenario's request(s). What is printed per scenario is the probe's
slowest answer and its 99th percentile during the request, and the request's own status and
time: a slow ``/healthz`` is the loop held by that request (the work the issue asks to keep
under ~50 ms: decoding, checking, building engine requests, tokenizing).

Scenarios: a 3.8 MB chat prompt served (encoded in a worker thread), the same refused for its
context (default fake context), 2,048 prompts x ``n`` at the edge's bound, and 10,000 prompts
x ``n=128`` (refused at the edge before any work). With ``--real`` (the ``local`` extra and
the model packages installed): the same 3.8 MB prompt to the built-in SmolLM2 on
``runtime: transformers``, refused on its size before any tokenizing, and the built-in MiniLM
on ``runtime: embeddings`` with one 3.8 MB input and 2,048 inputs of 300 words (tokenized in a
worker thread) (the model is converted
once into ``$INFERENCE_RUNTIME_CACHE_DIR``, else a temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import die_with_parent, free_port, log, percentiles, stop_process

_CONFIG = """
gateway: {{host: 127.0.0.1, port: {port}, max_body_bytes: 16777216}}
deployments:
  - name: roomy
    runtime: fake
    runtime_config: {{max_context: 100000000, output_tokens: 2}}
    serving: {{max_concurrent: 64, queue_capacity: 8192}}
  - name: small
    runtime: fake
    runtime_config: {{output_tokens: 2}}
"""
_REAL = """
  - name: smollm2
    runtime: transformers
    model: builtin:smollm2-135m-instruct
  - name: minilm
    runtime: embeddings
    model: builtin:all-minilm-l6-v2
"""


async def probe(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    times: list[float] = []
    while not stop.is_set():
        start = time.perf_counter()
        async with http.get(url + "/healthz") as reply:
            await reply.read()
        times.append(time.perf_counter() - start)
    return times


async def measure(
    url: str, label: str, send: Callable[[aiohttp.ClientSession], Awaitable[int]]
) -> None:
    async with aiohttp.ClientSession() as pinger, aiohttp.ClientSession() as client:
        stop = asyncio.Event()
        pings = asyncio.ensure_future(probe(pinger, url, stop))
        await asyncio.sleep(0.2)  # the probe's connection is open and warm
        start = time.perf_counter()
        status = await send(client)
        took = time.perf_counter() - start
        stop.set()
        times = await pings
    _, p99 = percentiles(times)  # milliseconds
    print(
        f"| {label} | {status} | {took * 1e3:,.0f} ms | {max(times) * 1e3:,.1f} ms "
        f"| {p99:,.1f} ms | {len(times)} |",
        flush=True,
    )


def post(url: str, path: str, body: dict[str, Any]) -> Callable[[aiohttp.ClientSession], Any]:
    async def send(http: aiohttp.ClientSession) -> int:
        async with http.post(url + path, json=body) as reply:
            await reply.read()
            return reply.status

    return send


async def scenarios(url: str, size: int, *, real: bool) -> None:
    big = "word " * (size // 5)
    chat = [{"role": "user", "content": big}]
    print("| request | status | its time | /healthz max | /healthz p99 | pings |")
    print("|---|---|---|---|---|---|")
    await measure(url, "/healthz alone", lambda http: asyncio.sleep(1, result=0))
    label = f"chat, {size / 1e6:.1f} MB prompt, served"
    await measure(url, label, post(url, "/v1/chat/completions", {
        "model": "roomy", "messages": chat, "max_tokens": 1}))  # fmt: skip
    label = f"chat, {size / 1e6:.1f} MB prompt, over the context"
    await measure(url, label, post(url, "/v1/chat/completions", {
        "model": "small", "messages": chat, "max_tokens": 1}))  # fmt: skip
    label = "completions, 2,048 prompts x n=4"
    await measure(url, label, post(url, "/v1/completions", {
        "model": "roomy", "prompt": ["hi"] * 2048, "n": 4, "max_tokens": 1}))  # fmt: skip
    label = "completions, 10,000 prompts x n=128 (refused)"
    await measure(url, label, post(url, "/v1/completions", {
        "model": "roomy", "prompt": ["hi"] * 10_000, "n": 128, "max_tokens": 1}))  # fmt: skip
    if real:
        label = f"chat, {size / 1e6:.1f} MB prompt, built-in SmolLM2 (over its context)"
        await measure(url, label, post(url, "/v1/chat/completions", {
            "model": "smollm2", "messages": chat, "max_tokens": 1}))  # fmt: skip
        label = f"embeddings, one {size / 1e6:.1f} MB input, built-in MiniLM (over its length)"
        await measure(url, label, post(url, "/v1/embeddings", {
            "model": "minilm", "input": big}))  # fmt: skip
        label = "embeddings, 2,048 inputs x 300 words, built-in MiniLM"
        await measure(url, label, post(url, "/v1/embeddings", {
            "model": "minilm", "input": ["word " * 300] * 2048}))  # fmt: skip


async def wait_up(url: str, process: subprocess.Popen[bytes], *, real: bool) -> None:
    ready = url + ("/readyz?deployment=minilm" if real else "/readyz")
    async with aiohttp.ClientSession() as http:
        for _ in range(6000 if real else 600):
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode}")
            try:
                async with http.get(ready) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server never became ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=3_800_000, help="prompt bytes")
    parser.add_argument("--real", action="store_true", help="add the built-in SmolLM2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = Path(folder) / "config.yaml"
        config.write_text(_CONFIG.format(port=port) + (_REAL if args.real else ""))
        env = {
            "INFERENCE_RUNTIME_DATA_DIR": folder,
            "INFERENCE_RUNTIME_CACHE_DIR": _environ().get("INFERENCE_RUNTIME_CACHE_DIR", folder),
        }
        command = [sys.executable, "-m", "inference_runtime.cli.main", "serve", "--config",
                   str(config)]  # fmt: skip
        with (Path(folder) / "server.log").open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=out, env={**_environ(), **env},
                preexec_fn=die_with_parent,
            )  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}"
                asyncio.run(wait_up(url, process, real=args.real))
                asyncio.run(scenarios(url, args.size, real=args.real))
            finally:
                stop_process(process, "server", 10)
                log("server stopped")


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    main()
