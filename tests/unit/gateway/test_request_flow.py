"""``RequestFlow`` in its handler's task: retries, a stop and a cancel handled one at a time,
and every lease, admission and record given back exactly once (stub coordinator and engines)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.cluster import Release, Route, RouteLease
from inference_runtime.engine import AbortRequest, AddRequest, Admitted
from inference_runtime.errors import (
    NoHealthyReplica,
    ReplicaFailed,
    RequestFailedReplicas,
    Unavailable,
)
from inference_runtime.gateway.request_flow import RequestFlow, RequestJob
from inference_runtime.gateway.stream import ResponseStream
from inference_runtime.metrics import RequestRecord
from inference_runtime.types import Deployment, EngineRequest, TokenChunk, Usage


class Engine(Actor):
    """Admits once ``gate`` is set; then ``script`` plays on the sink: "fail" (a retryable
    failure before any token), "suspect" / "culprit" (the same, in the failing step: shared,
    alone), "buffered" (a token, then a failure; "late": once the token was taken) or
    "answer" (two words and the end)."""

    def __init__(self, name: str, gate: asyncio.Event, script: str, log: list[Any]) -> None:
        self.name, self.gate, self.script, self.log = name, gate, script, log
        if script.startswith("flaky"):  # "flaky3": fails its first 3 requests, then answers
            self.script, self.flaky = "fail", int(script.removeprefix("flaky"))
        else:
            self.flaky = 0

    async def receive(self, message: Any) -> Any:
        self.log.append((self.name, message))
        if isinstance(message, AddRequest):
            await self.gate.wait()
            sink, rid = message.sink, message.requests[0].request_id
            failures = {
                "fail": ReplicaFailed(f"{self.name} failed"),
                "suspect": ReplicaFailed(f"{self.name} failed", in_step=True),
                "culprit": ReplicaFailed(f"{self.name} failed", in_step=True, alone=True),
            }
            if self.script in failures:
                asyncio.get_running_loop().call_soon(
                    sink.on_error, 0, failures[self.script], Usage()
                )
            elif self.script in ("buffered", "late"):  # a token, then the replica fails
                sink.on_chunks([TokenChunk(rid, 0, "lost")])
                asyncio.get_running_loop().call_later(
                    0.0 if self.script == "buffered" else 0.05,
                    sink.on_error, 0, ReplicaFailed(f"{self.name} failed"), Usage(),
                )  # fmt: skip
            elif self.script == "answer":
                sink.on_chunks([TokenChunk(rid, 0, "hi"), TokenChunk(rid, 0, " there")])
                sink.on_finish(0, Usage(prompt_tokens=3, completion_tokens=2))
            if self.flaky:
                self.flaky -= 1
                if not self.flaky:
                    self.script = "answer"
            return Admitted(self.name, 3)
        return None


class Coordinator(Actor):
    """Leases the replicas in order, skipping the excluded; records releases."""

    replied_errors = (NoHealthyReplica,)

    def __init__(self, engines: dict[str, ActorRef], log: list[Any]) -> None:
        self.engines, self.log = engines, log

    def receive(self, message: Any) -> Any:
        self.log.append(message)
        if isinstance(message, Route):
            name = next((n for n in self.engines if n not in message.exclude), None)
            if name is None:
                raise NoHealthyReplica("every replica is excluded")
            return RouteLease("d", name, self.engines[name])
        return None


class Metrics(Actor):
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        self.log.append(message)


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    system = ActorSystem.create("flow")
    yield system
    await system.shutdown()


def setup(
    system: ActorSystem, scripts: dict[str, str], *, open_gate: bool = True, whole: bool = False
) -> tuple[RequestFlow, asyncio.Event, list[Any], list[Any], list[Any]]:
    gate, engine_log, coordinator_log, records = asyncio.Event(), [], [], []  # type: ignore[var-annotated]
    if open_gate:
        gate.set()
    engines = {
        name: system.actor_of(Props(lambda n=name, s=script: Engine(n, gate, s, engine_log)))
        for name, script in scripts.items()
    }
    coordinator = system.actor_of(Props(lambda: Coordinator(engines, coordinator_log)))
    metrics = system.actor_of(Props(lambda: Metrics(records)))
    deployment = Deployment.from_dict({"name": "d", "runtime": "fake"})
    request = EngineRequest(request_id="r-0", deployment="d")
    stream = ResponseStream(wake_each_chunk=not whole)
    job = RequestJob("r", deployment, [(request,)], stream, lambda name: None)
    flow = RequestFlow(job, coordinator=coordinator, metrics=metrics)
    return flow, gate, engine_log, coordinator_log, records


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def drain(flow: RequestFlow) -> list[TokenChunk]:
    chunks: list[TokenChunk] = []
    while batch := await flow.next_batch():
        chunks += batch
    return chunks


async def test_a_failure_before_the_first_token_is_retried_on_another_replica(
    system: ActorSystem,
) -> None:
    flow, _, engine_log, coordinator_log, records = setup(system, {"a": "fail", "b": "answer"})
    await flow.start()
    chunks = await drain(flow)  # the failure comes as an event; the retry runs right here
    flow.close()
    await settle()
    assert [c.text for c in chunks] == ["hi", " there"]
    assert flow.job.stream.usage == Usage(prompt_tokens=3, completion_tokens=2)
    routes = [m for m in coordinator_log if isinstance(m, Route)]
    assert [sorted(r.exclude) for r in routes] == [[], ["a"]]
    released = [m.replica_id for m in coordinator_log if isinstance(m, Release)]
    assert released == ["a", "b"]  # each lease given back once
    assert ("a", AbortRequest("r-0")) in engine_log  # the failed attempt is aborted there
    [record] = [r for r in records if isinstance(r, RequestRecord)]
    assert (record.outcome, record.replica_id, record.completion_tokens) == ("success", "b", 2)


async def test_a_stop_during_an_admission_waits_for_it_then_gives_everything_back(
    system: ActorSystem,
) -> None:
    flow, gate, engine_log, coordinator_log, records = setup(system, {"a": "hold"}, open_gate=False)
    starting = asyncio.ensure_future(flow.start())
    await settle()  # routed; the admission waits on the gate
    flow.stop(Unavailable("the gateway is stopping"))
    assert not starting.done()
    gate.set()
    await starting
    assert await flow.next_batch() == []
    assert isinstance(flow.job.stream.error, Unavailable)
    flow.close()  # the handler's finally: nothing more to do
    await settle()
    messages = [m for name, m in engine_log if name == "a"]
    assert [type(m) for m in messages] == [AddRequest, AbortRequest]  # admitted, then aborted
    assert [m.replica_id for m in coordinator_log if isinstance(m, Release)] == ["a"]
    [record] = [r for r in records if isinstance(r, RequestRecord)]
    assert (record.outcome, record.error_code) == ("error", "Unavailable")


async def test_a_cancelled_handler_aborts_releases_and_meters_once(system: ActorSystem) -> None:
    flow, _, engine_log, coordinator_log, records = setup(system, {"a": "hold"})

    async def handler() -> None:
        try:
            await flow.start()
            await drain(flow)
        finally:
            flow.close()

    task = asyncio.ensure_future(handler())
    await settle()
    task.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await task
    flow.close()  # twice: still once
    await settle()
    assert [type(m) for _, m in engine_log] == [AddRequest, AbortRequest]
    assert [m.replica_id for m in coordinator_log if isinstance(m, Release)] == ["a"]
    [record] = [r for r in records if isinstance(r, RequestRecord)]
    assert (record.outcome, record.error_code) == ("cancelled", "client_disconnected")
    assert record.replica_id == "a"


def adds(engine_log: list[Any]) -> list[tuple[str, bool]]:
    return [(name, m.isolate) for name, m in engine_log if isinstance(m, AddRequest)]


async def test_a_suspect_of_a_failed_step_is_retried_once_isolated(system: ActorSystem) -> None:
    flow, _, engine_log, _, _ = setup(system, {"a": "suspect", "b": "answer"})
    await flow.start()
    chunks = await drain(flow)
    flow.close()
    assert [c.text for c in chunks] == ["hi", " there"]
    assert adds(engine_log) == [("a", False), ("b", True)]  # the retry runs in its own steps


async def test_a_request_that_failed_two_steps_is_final(system: ActorSystem) -> None:
    flow, _, engine_log, _, _ = setup(system, {"a": "suspect", "b": "suspect", "c": "answer"})
    await flow.start()
    assert await drain(flow) == []
    flow.close()
    error = flow.job.stream.error
    assert isinstance(error, RequestFailedReplicas)
    assert error.request_id == "r"
    assert "in the failing steps of replicas a, b" in str(error)
    assert adds(engine_log) == [("a", False), ("b", True)]  # never onto a third replica


async def test_a_request_alone_in_a_failed_step_is_final_at_once(system: ActorSystem) -> None:
    flow, _, engine_log, _, _ = setup(system, {"a": "culprit", "b": "answer"})
    await flow.start()
    assert await drain(flow) == []
    flow.close()
    assert isinstance(flow.job.stream.error, RequestFailedReplicas)
    assert "alone in the failing step of replica a" in str(flow.job.stream.error)
    assert adds(engine_log) == [("a", False)]  # it touched one replica only


async def test_a_whole_reply_is_retried_when_its_replica_fails_midway(
    system: ActorSystem,
) -> None:
    """Tokens buffered for a reply sent whole never reached the client: the replica failing
    then is retried like a stream that sent nothing, and what it produced is dropped."""
    flow, _, engine_log, _, _ = setup(system, {"a": "buffered", "b": "answer"}, whole=True)
    await flow.start()
    chunks = await drain(flow)
    flow.close()
    assert [c.text for c in chunks] == ["hi", " there"]
    assert flow.job.stream.usage == Usage(prompt_tokens=3, completion_tokens=2)
    assert adds(engine_log) == [("a", False), ("b", False)]


async def test_a_stream_that_sent_tokens_is_not_retried(system: ActorSystem) -> None:
    flow, _, engine_log, _, _ = setup(system, {"a": "late", "b": "answer"})
    await flow.start()
    assert [c.text for c in await flow.next_batch()] == ["lost"]  # it reached the client
    assert await drain(flow) == []
    flow.close()
    assert isinstance(flow.job.stream.error, ReplicaFailed)
    assert adds(engine_log) == [("a", False)]


async def test_a_request_displaced_by_others_failures_is_retried_beyond_its_own_tries(
    system: ActorSystem,
) -> None:
    """Failures of steps it was not in are not its own: they do not use up its tries, and the
    replicas it left are taken again once the others are excluded."""
    flow, _, engine_log, _, _ = setup(system, {"a": "flaky3", "b": "flaky3"})
    await flow.start()
    chunks = await drain(flow)
    flow.close()
    assert [c.text for c in chunks] == ["hi", " there"]
    assert [name for name, _ in adds(engine_log)] == ["a", "b", "a", "b", "a", "b", "a"]


async def test_a_lone_replica_that_failed_a_request_is_tried_again(system: ActorSystem) -> None:
    flow, _, engine_log, _, _ = setup(system, {"a": "flaky1"})
    await flow.start()
    chunks = await drain(flow)
    flow.close()
    assert [c.text for c in chunks] == ["hi", " there"]
    assert adds(engine_log) == [("a", False), ("a", False)]
