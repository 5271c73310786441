"""The HTTP side of the gateway (aiohttp): OpenAI's routes, health, metrics, OpenAPI.

A completion request is parsed and validated here, then driven by a ``RequestFlow`` in the
handler's own task, which writes what the request's stream yields. A client that goes away (the
handler is cancelled, or a write fails) closes the flow, which aborts the sequences in the
engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from inference_runtime.actors import ActorRef, ActorSystem
from inference_runtime.cluster import GetDeploymentStatus, GetRoutingTable, RoutingTableSnapshot
from inference_runtime.config import AuthConfig, GatewayConfig
from inference_runtime.errors import (
    InferenceRuntimeError,
    ModelNotFound,
    NotFound,
    RequestError,
    RequestTooLarge,
    Unavailable,
)
from inference_runtime.gateway import json_body, schema
from inference_runtime.gateway.admin import AdminRoutes
from inference_runtime.gateway.auth import Authenticator
from inference_runtime.gateway.edge import EdgePolicy
from inference_runtime.gateway.edge_protocol import EdgeRunner
from inference_runtime.gateway.embeddings import create_embeddings
from inference_runtime.gateway.errors import error_body, to_http
from inference_runtime.gateway.limits import apply_limits
from inference_runtime.gateway.openapi import OPENAPI
from inference_runtime.gateway.request_flow import RequestFlow, RequestJob
from inference_runtime.gateway.responses import DONE, StreamEncoder, completion_body, error_frame
from inference_runtime.gateway.stream import ResponseStream
from inference_runtime.metrics import (
    PROMETHEUS_CONTENT_TYPE,
    CircuitGauge,
    GetSnapshot,
    ReplicaGauge,
    render_prometheus,
)
from inference_runtime.remote import core as remote_core
from inference_runtime.types import Deployment, EngineRequest, ReplicaState

log = logging.getLogger("inference_runtime.gateway")
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_encode = msgspec.json.Encoder().encode
_SHUTDOWN_TIMEOUT_S = 2.0


class _EventStream(web.StreamResponse):
    """An SSE response whose headers wait for the first bytes of the body and go out with
    them: one write, one packet less per stream. (aiohttp's own ``Response`` buffers them the
    same way; a ``StreamResponse`` sends them at ``prepare`` unless told otherwise.)"""

    _send_headers_immediately = False


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def _error(error: BaseException) -> web.Response:
    http = to_http(error)
    return web.Response(
        body=http.body, status=http.status, headers=http.headers, content_type="application/json"
    )


def _priority(request: web.Request) -> int:
    value = request.headers.get("X-Priority")
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise RequestError(
            f"X-Priority: {value!r} is not an integer (lower goes first)", param="X-Priority"
        ) from None


def _replica(stream: ResponseStream) -> dict[str, str]:
    return {"X-Replica-Id": stream.replica_id} if stream.replica_id else {}


def _guard(edge: EdgePolicy, authenticator: Authenticator) -> Any:
    """The one middleware (each layer costs every request): the edge's checks (Host, Origin,
    Content-Type), the key check, then the handler, and any error of ours or aiohttp's as an
    OpenAI-shaped error body."""

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
        try:
            edge.check(request)
            if request.method == "OPTIONS":  # a browser asks before it sends: no key yet
                preflight = edge.preflight(request)
                if preflight is not None:
                    return preflight
            authenticator.check(request)
            return await handler(request)
        except InferenceRuntimeError as error:
            return _error(error)
        except web.HTTPRequestEntityTooLarge as error:
            return _error(RequestTooLarge(f"request body over the limit: {error.text}"))
        except RequestPayloadError as error:  # a body aiohttp could not read (bad gzip, ...)
            reason = str(error).partition("message:")[2].strip() or str(error)
            return _error(RequestError(f"the request body could not be read: {reason}"))
        except web.HTTPException as error:
            if error.status < 400:
                raise
            code = "not_found" if error.status == 404 else "http_error"
            body = error_body(
                f"{request.method} {request.path}: {error.reason}",
                "invalid_request_error",
                None,
                code,
            )
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            return web.Response(
                body=body, status=error.status, headers=allow, content_type="application/json"
            )

    return guard


class GatewayServer:
    """Routes and their handlers; owned by the ApiGatewayActor, which feeds it the catalog."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        system: ActorSystem,
        coordinator: ActorRef,
        metrics: ActorRef | None,
        manager: ActorRef | None = None,
        placement: ActorRef | None = None,
        auth: AuthConfig | None = None,
    ) -> None:
        self.config = config
        self.authenticator = Authenticator(
            auth or AuthConfig(), host=config.host, clock=system.clock.now
        )
        self.edge = EdgePolicy(config)
        self.admin = AdminRoutes(manager=manager, placement=placement)
        self.system = system
        self.coordinator = coordinator
        self.metrics = metrics
        self.catalog: Mapping[str, Deployment] = {}
        self.created: dict[str, int] = {}
        self.in_flight = 0
        self.flows: set[RequestFlow] = set()
        """The completion requests in flight, to end them if the gateway stops."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.address: tuple[str, int] = (config.host, config.port)

    # -- lifecycle -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.max_body_bytes,
            middlewares=[_guard(self.edge, self.authenticator)],
        )
        app.on_response_prepare.append(self.edge.allow_origin)
        self.admin.add_to(app)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model_id:.+}", self.get_model)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/openapi.json", self.openapi)
        return app

    async def start(self) -> None:
        self._runner = EdgeRunner(
            self.app(),
            header_timeout_s=self.config.header_timeout_s,
            body_timeout_s=self.config.body_timeout_s,
            handler_cancellation=True,
            access_log=None,
            # the graceful part is our drain (drain_timeout_s); by close every open request has
            # been ended, and only a handler blocked writing to a client that does not read is
            # left: it is cancelled after this, not after aiohttp's default of a minute
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            host, port = sockets[0].getsockname()[:2]
            self.address = (host, port)
        log.info("gateway listening on http://%s:%d", *self.address)

    async def drain(self, timeout: float) -> None:
        """Stop accepting connections, then wait (bounded) for in-flight requests."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self.in_flight:
            log.info(
                "draining: waiting for %d request%s (up to %g s)",
                self.in_flight,
                "" if self.in_flight == 1 else "s",
                timeout,
            )
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain timed out with %d requests in flight", self.in_flight)

    async def close(self) -> None:
        for flow in list(self.flows):  # their handlers answer an error, then return
            flow.stop(Unavailable("the gateway is stopping"))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_catalog(self, catalog: Mapping[str, Deployment]) -> None:
        now = int(time.time())
        self.created = {name: self.created.get(name, now) for name in catalog}
        self.catalog = catalog

    # -- completions ---------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        deployment = self._resolve(schema.peek_model(body))
        remote = deployment.remote
        kind = schema.RemoteChatCompletionRequest if remote else schema.ChatCompletionRequest
        req = schema.decode(body, kind)
        schema.validate_chat(req, deployment=deployment)
        passthrough = json_body.decode(body) if remote else None
        rid = "chatcmpl-" + os.urandom(16).hex()
        sampling = apply_limits(
            schema.sampling_of(req),
            deployment=deployment,
            messages=len(req.messages),
            gateway=self.config,
        )
        messages = tuple(req.messages)
        session = request.headers.get("X-Session-Id") or req.user
        group = tuple(
            EngineRequest(
                request_id=rid,
                deployment=deployment.name,
                messages=messages,
                sampling=sampling,
                choice_index=i,
                session_id=session,
                priority=_priority(request),
                passthrough=passthrough,
                stream=req.stream,
            )
            for i in range(req.n)
        )
        return await self._serve(request, req, rid, deployment, [group], session, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        deployment = self._resolve(schema.peek_model(body))
        remote = deployment.remote
        kind = schema.RemoteCompletionRequest if remote else schema.CompletionRequest
        req = schema.decode(body, kind)
        prompts = schema.validate_completion(req, deployment=deployment)
        passthrough = json_body.decode(body) if remote else None
        rid = "cmpl-" + os.urandom(16).hex()
        sampling = apply_limits(
            schema.sampling_of(req), deployment=deployment, messages=0, gateway=self.config
        )
        session = request.headers.get("X-Session-Id") or req.user
        groups = [
            tuple(
                EngineRequest(
                    request_id=f"{rid}-{p}",
                    deployment=deployment.name,
                    prompt=prompt,
                    sampling=sampling,
                    choice_index=p * req.n + i,
                    session_id=session,
                    priority=_priority(request),
                    passthrough=passthrough,
                    stream=req.stream,
                )
                for i in range(req.n)
            )
            for p, prompt in enumerate(prompts)
        ]
        return await self._serve(request, req, rid, deployment, groups, session, chat=False)

    async def _serve(
        self,
        request: web.Request,
        req: schema.ChatCompletionRequest | schema.CompletionRequest,
        rid: str,
        deployment: Deployment,
        groups: list[tuple[EngineRequest, ...]],
        session: str | None,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        stream = ResponseStream(wake_each_chunk=req.stream)
        job = RequestJob(rid, deployment, groups, stream, self.catalog.get, session)
        flow = RequestFlow(job, coordinator=self.coordinator, metrics=self.metrics)
        self._enter(flow)
        try:
            await flow.start()
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                encoder = StreamEncoder(
                    response_id=rid, model=req.model, chat=chat, include_usage=include_usage
                )
                return await self._write_stream(request, flow, encoder)
            chunks = []
            while batch := await flow.next_batch():
                chunks.extend(batch)
            if stream.error is not None or stream.usage is None:
                return _error(stream.error or RuntimeError("stream ended without usage"))
            body = completion_body(
                response_id=rid,
                model=req.model,
                chat=chat,
                chunks=chunks,
                choices=job.choices,
                usage=stream.usage,
            )
            headers = {"Content-Type": "application/json"}  # as a header: no parsing of it
            if stream.replica_id:
                headers["X-Replica-Id"] = stream.replica_id
            return web.Response(body=body, headers=headers)
        finally:
            flow.close()  # ended: release and meter; else (the client went away) abort too
            self._exit(flow)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._body(request)  # before it counts: a body that stalls holds no drain
        self._enter(None)  # counted, so that a drain waits for it
        try:
            return await create_embeddings(
                body,
                catalog=self.catalog,
                coordinator=self.coordinator,
                metrics=self.metrics,
            )
        finally:
            self._exit(None)

    async def _write_stream(
        self, request: web.Request, flow: RequestFlow, encoder: StreamEncoder
    ) -> web.StreamResponse:
        stream = flow.job.stream
        batch = await flow.next_batch()
        if not batch and stream.error is not None:
            return _error(stream.error)  # nothing sent yet: a real HTTP status
        response = _EventStream(headers={**_SSE_HEADERS, **_replica(stream)})
        await response.prepare(request)  # the headers go out with the first bytes of the body
        frames = b""
        try:
            while batch:
                frames = encoder.frames(batch)
                if stream.ended:  # the last batch: it goes out with the end, in one write
                    break
                if frames:
                    await response.write(frames)
                    frames = b""
                batch = await flow.next_batch()
            if stream.error is not None:
                frames += error_frame(to_http(stream.error).body)
            elif stream.usage is not None:
                frames += encoder.usage_frame(stream.usage) + DONE
            await response.write_eof(frames)
        except ConnectionError:
            # the client went away mid-stream (a reset): the flow's close aborts the work, and
            # aiohttp takes the response's end quietly; not a server error to log
            pass
        return response

    async def _body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise RequestTooLarge(
                f"request body of {length} bytes is over the limit of "
                f"{self.config.max_body_bytes} bytes"
            )
        body = await request.read()
        if not body:
            raise RequestError("the request body is empty; send a JSON object")
        return body

    def _resolve(self, model: str) -> Deployment:
        deployment = self.catalog.get(model)
        if deployment is None:
            raise ModelNotFound(model)
        return deployment

    def _enter(self, flow: RequestFlow | None) -> None:
        self.in_flight += 1
        self._idle.clear()
        if flow is not None:
            self.flows.add(flow)

    def _exit(self, flow: RequestFlow | None) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        if flow is not None:
            self.flows.discard(flow)

    # -- models, health, metrics, openapi ------------------------------------------------

    def _model(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": self.created.get(name, 0),
            "owned_by": "inference-runtime",
        }

    async def list_models(self, request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [self._model(n) for n in sorted(self.catalog)]})

    async def get_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in self.catalog:
            raise ModelNotFound(model_id)
        return _json(self._model(model_id))

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready while the gateway serves and some deployment can (or there is none yet): one
        broken deployment leaves the others served. ``?deployment=NAME`` answers for that one."""
        table: RoutingTableSnapshot = await self.coordinator.ask(GetRoutingTable(), timeout=5)
        states = {name: [r.state for r in table.deployments.get(name, ())] for name in self.catalog}
        views = {name: _readiness(rows) for name, rows in states.items()}
        healthy = {name: view["healthy_replicas"] for name, view in views.items()}
        name = request.query.get("deployment")
        if name is not None:
            if name not in views:
                raise ModelNotFound(name)
            ready = views[name]["ready"]
            body: dict[str, Any] = {"deployment": name, **views[name]}
        else:
            ready = not views or any(view["ready"] for view in views.values())
            body = {"deployments": views, "healthy_replicas": healthy}
        return _json({"status": "ready" if ready else "not_ready", **body}, 200 if ready else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            raise NotFound("no MetricsActor is running")
        snapshot = await self.metrics.ask(GetSnapshot(), timeout=5)
        table: RoutingTableSnapshot = await self.coordinator.ask(GetRoutingTable(), timeout=5)
        history = await self._replica_history()
        replicas = [
            ReplicaGauge(
                deployment=r.deployment,
                replica_id=r.replica_id,
                state=r.state.value,
                in_flight=r.in_flight,
                waiting=r.waiting,
                running=r.running,
                context_restarts=r.context_restarts,
                failures=history.get(r.replica_id, (0, 0))[0],
                moves=history.get(r.replica_id, (0, 0))[1],
            )
            for rows in table.deployments.values()
            for r in rows
        ]
        stats = self.system.statistics()
        circuits = [
            CircuitGauge(
                provider=provider,
                endpoint=endpoint,
                state=c.state,
                opened_total=c.opened_total,
                rejected_total=c.rejected_total,
            )
            for (provider, endpoint), c in remote_core.BREAKERS.statistics().items()
        ]
        body = render_prometheus(
            snapshot,
            replicas=replicas,
            dead_letters=stats.dead_letters,
            actors_alive=stats.actors_alive,
            circuits=circuits,
        )
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _replica_history(self) -> dict[str, tuple[int, int]]:
        """(failures, moves) per replica id, from the deployment manager when there is one."""
        if self.admin.manager is None:
            return {}
        views = await self.admin.manager.ask(GetDeploymentStatus(), timeout=5)
        return {
            r["id"]: (r["failures"], r["moves"]) for view in views for r in view["replica_list"]
        }

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(OPENAPI)


def _readiness(states: list[ReplicaState]) -> dict[str, Any]:
    """One deployment's part of ``/readyz``: routable when a replica is healthy."""
    healthy = sum(1 for state in states if state is ReplicaState.HEALTHY)
    counts = dict(Counter(state.value for state in states))
    return {"ready": healthy > 0, "healthy_replicas": healthy, "replicas": counts}
