"""The request handling of :class:`~inference_runtime.testing.MockUpstream`.

Kept apart from the public class so that the lifecycle and the test-facing API read on their own.
``UpstreamServing`` holds no state of its own: the attributes it declares are set up by
``MockUpstream.__init__``. Everything per request is cheap on purpose (the mock serves proxy
benchmarks): one dict lookup to route, one msgspec decode, faults only looked at when scripted.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDictProxy

from inference_runtime.testing import mock_upstream_anthropic as anthropic_replies
from inference_runtime.testing import mock_upstream_replies as replies
from inference_runtime.testing.mock_upstream_faults import Fault
from inference_runtime.testing.mock_upstream_http import (
    abort,
    error_response,
    fault_response,
    send_body,
    write_stream,
)

_decode = msgspec.json.Decoder().decode
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"}
)
_ID_PREFIX = {"chat": "chatcmpl-mock", "completions": "cmpl-mock", "messages": "msg_mock"}
_ROUTES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "completions",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "models",
    ("POST", "/v1/messages"): "messages",
}


@dataclass(frozen=True, slots=True, repr=False)
class RecordedRequest:
    """One request as the mock received it, for assertions.

    ``headers`` is case-insensitive and holds the real credentials (a test may need to check
    which key was sent), but ``repr`` masks them, so a failing assertion never prints a secret.
    ``received_at`` is ``time.monotonic()``: subtract two to check a client's backoff.
    ``fault`` is the fault this request got, if any.
    """

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: Any
    received_at: float
    prompt: str
    fault: Fault | None

    @property
    def api_key(self) -> str | None:
        """The key sent: ``x-api-key``, else the ``Authorization: Bearer`` token."""
        key = self.headers.get("x-api-key")
        if key is not None:
            return key
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth[:7].lower() == "bearer " else None

    @property
    def stream(self) -> bool:
        """Whether the body asked for a streamed reply."""
        return isinstance(self.body, dict) and self.body.get("stream") is True

    def __repr__(self) -> str:
        headers = {
            k: (_mask(v) if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()
        }
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, headers={headers!r}, "
            f"body={self.body!r}, received_at={self.received_at!r}, fault={self.fault!r})"
        )


def _mask(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    return f"{scheme} ***" if rest else "***"


class UpstreamServing:
    """The aiohttp handler and everything it calls; ``MockUpstream`` sets the state up."""

    _api_keys: frozenset[str] | None
    models: list[str]
    tokens_per_response: int
    token_delay_s: float
    first_byte_delay_s: float
    embedding_dimensions: int
    require_anthropic_version: bool
    record_requests: bool
    requests: list[RecordedRequest]
    counts: collections.Counter[str]
    active_requests: int
    active_streams: int
    _script: collections.deque[Fault | None]
    _markers: dict[str, Fault]
    _ids: itertools.count[int]

    def _take_fault(self, prompt: str) -> Fault | None:
        if self._script:
            return self._script.popleft()
        for marker, fault in self._markers.items():
            if marker in prompt:
                return fault
        return None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        self.counts[path] += 1
        route = _ROUTES.get((request.method, path))
        if route is None:
            if request.method == "GET" and path.startswith("/v1/models/"):
                route = "model"
            else:
                return error_response(path == "/v1/messages", 404, message=f"Unknown path {path}")
        # the payload stream, not request.read(): no 1 MiB cap, so huge prompts get through
        raw = await request.content.read() if request.body_exists else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = _decode(raw)
            except msgspec.DecodeError:
                bad_json = True
        prompt = replies.prompt_of(path, body)
        fault = self._take_fault(prompt)
        if self.record_requests:
            self.requests.append(
                RecordedRequest(
                    request.method, path, request.headers, body, time.monotonic(), prompt, fault
                )
            )
        self.active_requests += 1
        try:
            return await self._serve(request, route, body, bad_json, prompt, fault)
        finally:
            self.active_requests -= 1

    def _authorized(self, request: web.BaseRequest, anthropic: bool) -> bool:
        keys = self._api_keys
        return keys is None or self._sent_key(request, anthropic) in keys

    @staticmethod
    def _sent_key(request: web.BaseRequest, anthropic: bool) -> str | None:
        if anthropic:
            return request.headers.get("x-api-key")
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth[:7].lower() == "bearer " else None

    async def _serve(
        self,
        request: web.BaseRequest,
        route: str,
        body: Any,
        bad_json: bool,
        prompt: str,
        fault: Fault | None,
    ) -> web.StreamResponse:
        anthropic = route == "messages"
        if fault is not None and fault.kind == "echo_key":
            fault = fault.echoing(self._sent_key(request, anthropic) or "")
        kind = fault.kind if fault is not None else None
        delay = (
            fault.seconds
            if fault is not None and kind == "slow_first_byte"
            else self.first_byte_delay_s
        )
        if delay > 0:
            await asyncio.sleep(delay)
        if fault is not None and kind in ("reset", "status", "wrong_key"):
            if kind == "reset":
                abort(request)
                return web.Response()
            return fault_response(anthropic, fault)
        if not self._authorized(request, anthropic):
            return error_response(anthropic, 401)
        if (
            anthropic
            and self.require_anthropic_version
            and "anthropic-version" not in request.headers
        ):
            return error_response(anthropic, 400, message="anthropic-version: header is required")
        if route == "models":
            return await send_body(request, replies.models_body(self.models), fault, anthropic)
        if route == "model":
            model = request.path.removeprefix("/v1/models/")
            if model not in self.models:
                return error_response(False, 404, message=f"The model '{model}' does not exist")
            payload = msgspec.json.encode(replies.model_object(model))
            return await send_body(request, payload, fault, anthropic)
        if bad_json or not isinstance(body, dict):
            return error_response(
                anthropic, 400, message="We could not parse the JSON body of your request."
            )
        model = body.get("model") or self.models[0]
        if route == "embeddings":
            payload = replies.embeddings_body(
                model=model, body=body, default_dimensions=self.embedding_dimensions
            )
            return await send_body(request, payload, fault, anthropic)
        return await self._generate(request, route, body, model, prompt, fault)

    async def _generate(
        self,
        request: web.BaseRequest,
        route: str,
        body: dict[str, Any],
        model: str,
        prompt: str,
        fault: Fault | None,
    ) -> web.StreamResponse:
        anthropic = route == "messages"
        stream = body.get("stream") is True
        if anthropic:
            max_tokens = body.get("max_tokens")
            if not isinstance(max_tokens, int) or not isinstance(body.get("messages"), list):
                field = "max_tokens" if not isinstance(max_tokens, int) else "messages"
                return error_response(True, 400, message=f"{field}: Field required")
            stops = replies.stop_list(body.get("stop_sequences"))
            prompts = [prompt]
            n = 1
        else:
            max_tokens = body.get("max_completion_tokens")
            if max_tokens is None:
                max_tokens = body.get("max_tokens")
            if max_tokens is not None and not isinstance(max_tokens, int):
                return error_response(
                    False, 400, message="max_tokens must be an integer", param="max_tokens"
                )
            if route == "chat":
                if not isinstance(body.get("messages"), list) or not body["messages"]:
                    return error_response(
                        False, 400, message="'messages' is a required property", param="messages"
                    )
                prompts = [prompt]
            else:
                prompts = replies.inputs_of(body.get("prompt")) or [""]
            stops = replies.stop_list(body.get("stop"))
            requested = body.get("n")
            n = max(1, min(requested, 128)) if isinstance(requested, int) else 1
        gens = [
            replies.generate(
                p, choice=i, natural=self.tokens_per_response, max_tokens=max_tokens, stops=stops
            )
            for p in prompts
            for i in range(n)
        ]
        prompt_tokens = sum(replies.count_words(p) for p in prompts)
        rid = f"{_ID_PREFIX[route]}{next(self._ids)}"
        created = int(time.time())
        if stream:
            if anthropic:
                frames = anthropic_replies.anthropic_frames(
                    rid=rid, model=model, gen=gens[0], input_tokens=prompt_tokens
                )
            else:
                options = body.get("stream_options")
                frames = replies.openai_frames(
                    rid=rid,
                    model=model,
                    created=created,
                    chat=route == "chat",
                    gens=gens,
                    prompt_tokens=prompt_tokens,
                    include_usage=isinstance(options, dict)
                    and options.get("include_usage") is True,
                )
            return await write_stream(request, frames, fault, anthropic, self.token_delay_s, self)
        if self.token_delay_s > 0:
            await asyncio.sleep(self.token_delay_s * max(len(g.pieces) for g in gens))
        if anthropic:
            payload = anthropic_replies.anthropic_body(
                rid=rid, model=model, gen=gens[0], input_tokens=prompt_tokens
            )
        else:
            payload = replies.openai_body(
                rid=rid,
                model=model,
                created=created,
                chat=route == "chat",
                gens=gens,
                prompt_tokens=prompt_tokens,
            )
        return await send_body(request, payload, fault, anthropic)
