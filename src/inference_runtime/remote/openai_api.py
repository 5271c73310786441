"""The OpenAI-compatible provider (OpenAI, vLLM, a LiteLLM proxy, Ollama, ...): the upstream
request built from the client's own body, and the upstream's SSE turned into our chunks.

The client's body goes upstream untouched but for ``model`` (the upstream's name), ``stream``
(always on: the first token decides whether a retry is still allowed) and ``include_usage`` (the
provider counts the tokens). Each SSE event is decoded once, into a dict: the delta's fields
other than the text (``tool_calls``, ``refusal``, ...) are handed on as they came.
"""

from __future__ import annotations

from typing import Any

import msgspec

from inference_runtime.errors import UpstreamError
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.sse import SSEEvent
from inference_runtime.types import EngineRequest, Secret, TokenChunk, Usage

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_OURS = ("role", "content")


def build_request(
    group: tuple[EngineRequest, ...], *, config: RemoteConfig, key: Secret
) -> tuple[str, dict[str, str], bytes]:
    first = group[0]
    chat = first.messages is not None
    body: dict[str, Any] = dict(first.passthrough or {})
    if not body:  # built in code rather than by the gateway: the typed fields are all we have
        body = _from_fields(first)
    if not chat:
        body["prompt"] = first.prompt
    body["model"] = config.model
    body["n"] = len(group)
    body["stream"] = True
    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **config.headers}
    if key:
        headers["Authorization"] = f"Bearer {key.reveal()}"
    path = "/chat/completions" if chat else "/completions"
    return config.base_url.rstrip("/") + path, headers, _encode(body)


def _from_fields(request: EngineRequest) -> dict[str, Any]:
    s = request.sampling
    body: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p}
    if request.messages is not None:
        body["messages"] = [msgspec.to_builtins(m) for m in request.messages]
    if s.max_tokens is not None:
        body["max_tokens"] = s.max_tokens
    if s.stop:
        body["stop"] = list(s.stop)
    if s.seed is not None:
        body["seed"] = s.seed
    return body


class OpenAIStream:
    """Turns one upstream response's SSE events into our chunks, for one request's choices."""

    def __init__(self, group: tuple[EngineRequest, ...]) -> None:
        self.request_id = group[0].request_id
        self.indexes = [r.choice_index for r in group]
        self.usage: Usage | None = None
        self.finished: dict[int, str] = {}
        self.done = False
        self.chunks_out = 0

    def feed(self, event: SSEEvent) -> list[TokenChunk]:
        data = event.data.strip()
        if not data:
            return []
        if data == b"[DONE]":
            self.done = True
            return []
        try:
            frame = _decode(data)
        except msgspec.DecodeError:
            raise UpstreamError(
                "malformed SSE from the upstream: a data line is not JSON"
            ) from None
        if not isinstance(frame, dict):
            raise UpstreamError("malformed SSE from the upstream: a data line is not an object")
        if "error" in frame:
            raise UpstreamError(f"the upstream failed mid-stream: {_message(frame['error'])}")
        usage = frame.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        out = []
        for choice in frame.get("choices") or ():
            chunk = self._chunk(choice)
            if chunk is not None:
                out.append(chunk)
        self.chunks_out += len(out)
        return out

    def _chunk(self, choice: dict[str, Any]) -> TokenChunk | None:
        upstream_index = int(choice.get("index") or 0)
        if upstream_index >= len(self.indexes):
            raise UpstreamError(f"the upstream answered choice {upstream_index}, not asked for")
        index = self.indexes[upstream_index]
        delta = choice.get("delta")
        if isinstance(delta, dict):  # chat
            text = delta.get("content") or ""
            extra = {k: v for k, v in delta.items() if k not in _OURS and v is not None} or None
        else:  # completions
            text, extra = choice.get("text") or "", None
        finish = choice.get("finish_reason")
        if finish:
            self.finished[index] = finish
        if not text and not extra and not finish:
            return None
        return TokenChunk(
            request_id=self.request_id, index=index, text=text, finish_reason=finish, extra=extra
        )


def _message(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "unknown error")
    return str(error)
