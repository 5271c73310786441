"""``POST /v1/embeddings``: OpenAI's embeddings endpoint over an ``EmbeddingEngineActor``.

One ask admits a request and one future brings its vectors, so no RequestFlow is needed: the
handler routes, asks, awaits and releases itself. Whatever happens (an error, a retry, the client
going away and the handler being cancelled) the lease goes back to the coordinator and a queued
request is dropped from the engine, and the request is metered once.
"""

from __future__ import annotations

import array
import asyncio
import base64
import logging
import re
import sys
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from aiohttp import web

from inference_runtime.actors import ActorRef
from inference_runtime.cluster import Release, Route, RouteLease
from inference_runtime.engine.embedding_core import (
    CancelEmbed,
    Embed,
    EmbedAdmitted,
    EmbeddingResult,
)
from inference_runtime.errors import (
    Backpressure,
    BudgetExceeded,
    InferenceRuntimeError,
    ModelNotFound,
    NoHealthyReplica,
    RequestError,
)
from inference_runtime.gateway.leases import acquire_lease, tell_reliably
from inference_runtime.gateway.request_flow import MAX_ATTEMPTS
from inference_runtime.gateway.schema import decode_typed
from inference_runtime.metrics import RequestRecord, ReserveBudget, tell_record
from inference_runtime.metrics.budget import input_token_bound
from inference_runtime.types import Deployment

log = logging.getLogger("inference_runtime.gateway")
MAX_INPUTS = 2048
"""OpenAI's limit on the inputs of one request."""
MAX_TOKEN_ID = 2**31 - 1
"""The largest token id taken at the edge (the runner then checks its own vocabulary)."""
_encode = msgspec.json.Encoder().encode


class EmbeddingRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[Any]
    """A string, a list of strings, a token array, or a list of token arrays."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


_decoder = msgspec.json.Decoder(EmbeddingRequest)
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_PATH = re.compile(r"at `\$\.?([^`\[]*)")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def decode_request(body: bytes) -> EmbeddingRequest:
    """Parse and check a body; errors are 400s naming the parameter (as ``schema.decode``)."""
    try:
        req = decode_typed(body, _decoder.decode)
    except msgspec.ValidationError as error:
        text = str(error)
        if unknown := _UNKNOWN.search(text):
            name = unknown.group(1)
            raise RequestError(
                f"Unrecognized request argument supplied: {name}",
                param=name,
                code="unrecognized_argument",
            ) from None
        missing, path = _MISSING.search(text), _PATH.search(text)
        param = missing.group(1) if missing else (path.group(1) if path else None)
        raise RequestError(f"Invalid request: {text}", param=param or None) from None
    except msgspec.DecodeError as error:
        raise RequestError(f"The body is not valid JSON: {error}") from None
    if not req.model:
        raise RequestError("model must not be empty", param="model")
    if req.dimensions is not None and not 1 <= req.dimensions <= MAX_TOKEN_ID:
        raise RequestError(f"dimensions must be between 1 and {MAX_TOKEN_ID}", param="dimensions")
    return req


def inputs_of(req: EmbeddingRequest) -> tuple[str | tuple[int, ...], ...]:
    """The inputs, one per vector; empty ones, and mixtures of kinds, are 400s."""
    raw = req.input
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif raw and (ids := _token_ids(raw)) is not None:
        items = [ids]  # one token array
    else:
        items = raw
    if not items:
        raise RequestError("input must not be empty", param="input")
    if len(items) > MAX_INPUTS:
        raise RequestError(f"input takes at most {MAX_INPUTS} items", param="input")
    result: list[str | tuple[int, ...]] = []
    for i, item in enumerate(items):
        if isinstance(item, list) and (ids := _token_ids(item)) is not None:
            item = ids
        if not item:
            raise RequestError(f"input[{i}] must not be empty", param="input")
        if not isinstance(item, str | tuple):
            raise RequestError(
                "input must be a string, a list of strings, a list of token ids (integers "
                f"from 0 to {MAX_TOKEN_ID}), or a list of such lists",
                param="input",
            )
        result.append(item)
    return tuple(result)


def _token_ids(values: list[Any]) -> tuple[int, ...] | None:
    """The token ids of a list that holds only them (``7.0`` is ``7``: JSON has one number
    type), else None."""
    if all(_is_token(x) for x in values):
        return tuple(values)
    if all(_is_token(x) or (type(x) is float and x.is_integer() and _is_token(int(x)))
           for x in values):  # fmt: skip
        return tuple(int(x) for x in values)
    return None


def _is_token(value: object) -> bool:
    # bounded here: an id past any vocabulary (2**70) is the request's 400 on every runtime
    return type(value) is int and 0 <= value <= MAX_TOKEN_ID


async def create_embeddings(
    body: bytes,
    *,
    catalog: Mapping[str, Deployment],
    coordinator: ActorRef,
    metrics: ActorRef | None,
) -> web.Response:
    req = decode_request(body)
    inputs = inputs_of(req)
    deployment = catalog.get(req.model)
    if deployment is None:
        raise ModelNotFound(req.model)
    if deployment.runtime not in ("embeddings", "openai"):
        raise RequestError(f"The model `{req.model}` does not support embeddings", param="model")
    call = _EmbeddingCall(deployment, inputs, req.dimensions, catalog, coordinator, metrics)
    call.session_key = req.user  # as chat does: session_affinity keeps a user on one replica
    result = await call.run()
    return web.Response(
        body=response_body(req, result),
        content_type="application/json",
        headers={"X-Replica-Id": call.replica_id} if call.replica_id else None,
    )


def response_body(req: EmbeddingRequest, result: EmbeddingResult) -> bytes:
    b64 = req.encoding_format == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(raw).decode("ascii") if b64 else _floats(raw),
        }
        for i, raw in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return _encode({"object": "list", "data": data, "model": req.model, "usage": usage})


def _floats(raw: bytes) -> list[float]:
    values = array.array("f", raw)
    if sys.byteorder == "big":
        values.byteswap()  # the engine's bytes are little-endian
    return values.tolist()


class _EmbeddingCall:
    """One request: route, reserve, admit, await; retry on another replica, wait or fall
    back as the deployment says; release and meter on every way out."""

    def __init__(
        self,
        deployment: Deployment,
        inputs: tuple[str | tuple[int, ...], ...],
        dimensions: int | None,
        catalog: Mapping[str, Deployment],
        coordinator: ActorRef,
        metrics: ActorRef | None,
    ) -> None:
        self.deployment, self.inputs, self.dimensions = deployment, inputs, dimensions
        self.catalog, self.coordinator, self.metrics = catalog, coordinator, metrics
        self.request_id = "emb-" + uuid.uuid4().hex
        self.now = asyncio.get_running_loop().time
        self.arrival = self.now()
        self.replica_id: str | None = None
        self.admitted_at: float | None = None
        self.prompt_tokens = 0
        self.reservation: int | None = None
        self.fallbacks = list(deployment.fallbacks)
        self.attempts = 0
        self.session_key: str | None = None

    async def run(self) -> EmbeddingResult:
        outcome: str = "cancelled"
        code: str | None = "client_disconnected"
        try:
            result = await self._dispatch()
            outcome, code = "success", None
            return result
        except InferenceRuntimeError as error:
            outcome = "rejected" if self.admitted_at is None else "error"
            code = str(getattr(error, "code", None) or type(error).__name__)
            raise
        except Exception as error:
            outcome, code = "error", type(error).__name__
            raise
        finally:
            self._record(outcome, code)

    async def _dispatch(self) -> EmbeddingResult:
        serving = self.deployment.serving
        deadline, backoff, failures = self.arrival + serving.queue_timeout_s, 0.002, 0
        tried: set[str] = set()
        while True:
            try:
                return await self._attempt(tried)
            except BudgetExceeded:
                raise
            except Backpressure:
                mode = self.deployment.serving.on_capacity_exhausted
                if mode == "queue" and self.now() + backoff < deadline:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.05)
                    continue
                if mode == "fallback" and self._next_fallback(tried):
                    continue
                raise
            except NoHealthyReplica:
                if self._next_fallback(tried):
                    continue
                raise
            except InferenceRuntimeError as error:
                failures += 1  # a replica that failed or went away: try another one
                if error.retryable and self.deployment.idempotent and failures < MAX_ATTEMPTS:
                    continue
                raise

    async def _attempt(self, tried: set[str]) -> EmbeddingResult:
        lease = await self._route(tried)
        self.attempts += 1
        # an id per attempt: a late CancelEmbed of one attempt never hits the next
        request_id = f"{self.request_id}/{self.attempts}"
        sent = done = False
        try:
            await self._reserve()
            sent = True
            message = Embed(request_id, self.inputs, self.dimensions)
            admitted: EmbedAdmitted = await lease.engine.ask(message)
            self.replica_id, self.prompt_tokens = lease.replica_id, admitted.prompt_tokens
            self.admitted_at = self.now()
            result = await admitted.result
            done = True
            return result
        except InferenceRuntimeError as error:
            self.prompt_tokens = 0  # nothing of this attempt is charged
            if not isinstance(error, Backpressure):  # a full replica is not a broken one
                tried.add(lease.replica_id)
            raise
        finally:
            if sent and not done:  # failed or cancelled: drop it from the engine's queue
                tell_reliably(lease.engine, CancelEmbed(request_id))
            tell_reliably(self.coordinator, Release(lease.deployment, lease.replica_id))

    async def _route(self, tried: set[str]) -> RouteLease:
        route = Route(self.deployment.name, self.session_key, frozenset(tried))
        return await acquire_lease(self.coordinator, route)

    async def _reserve(self) -> None:
        dep = self.deployment
        if self.reservation is not None or dep.budget is None or self.metrics is None:
            return
        bound = sum(map(input_token_bound, self.inputs))  # a bound, not a guess
        self.reservation = await self.metrics.ask(ReserveBudget(dep.name, bound, 0))

    def _next_fallback(self, tried: set[str]) -> bool:
        """Move to the next fallback that serves embeddings, settling this one's reservation."""
        while self.fallbacks:
            name = self.fallbacks.pop(0)
            target = self.catalog.get(name)
            if target is not None and target.runtime == "embeddings":
                self._record("rejected", "fallback")
                self.deployment, self.reservation = target, None
                tried.clear()
                return True
            log.warning("fallback %r of %r does not serve embeddings", name, self.deployment.name)
        return False

    def _record(self, outcome: str, code: str | None) -> None:
        if self.metrics is None:
            return
        admitted = self.admitted_at
        record = RequestRecord(
            deployment=self.deployment.name,
            replica_id=self.replica_id,
            outcome=outcome,
            # charged once admitted, unless it failed: a cancelled request's batch may have run
            prompt_tokens=0 if outcome == "error" else self.prompt_tokens,
            completion_tokens=0,
            e2e_s=self.now() - self.arrival,
            queue_s=None if admitted is None else admitted - self.arrival,
            error_code=code,
            reservation=self.reservation,
        )
        self.reservation = None
        tell_record(self.metrics, record)
