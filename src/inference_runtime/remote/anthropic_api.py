"""The Anthropic provider: our OpenAI-shaped chat requests as Messages API calls, and the
Messages API's streaming events as our chunks.

Not a passthrough, because the shapes differ: Anthropic has no system role (the system prompt is
a top-level ``system``), wants user and assistant turns to alternate (consecutive turns of one
role are merged), requires ``max_tokens`` (``DEFAULT_MAX_TOKENS`` when the client gave none),
takes ``temperature`` in 0..1 only, and streams typed events rather than OpenAI deltas.

Translated: system/developer messages -> ``system``; user/assistant text and image parts ->
content blocks; assistant ``tool_calls`` -> ``tool_use`` blocks and ``tool`` messages ->
``tool_result`` blocks; ``max_completion_tokens``/``max_tokens``, ``temperature``, ``top_p``,
``top_k``, ``stop`` -> ``stop_sequences``, ``user`` -> ``metadata.user_id``, function ``tools``,
``tool_choice`` and ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``. Fields
OpenAI does not define go upstream untouched, as Anthropic's own (``thinking`` via
``extra_body``). An OpenAI field with no Anthropic meaning that the client set to anything but
its neutral value is refused by name (``UnsupportedParameter``, a 400): never silently dropped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from inference_runtime.errors import RequestError, UnsupportedParameter, UpstreamError
from inference_runtime.remote.config import RemoteConfig, endpoint_url
from inference_runtime.remote.sse import SSEEvent, SSEParser
from inference_runtime.remote.upstream_errors import event_message
from inference_runtime.types import EngineRequest, Secret, TokenChunk, Usage

DEFAULT_MAX_TOKENS = 4096
"""Sent when the client set no limit: Anthropic requires one, OpenAI's default is "no limit"."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_TRANSLATED = frozenset(
    {"model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens"}
    | {"temperature", "top_p", "top_k", "stop", "user", "tools", "tool_choice"}
    | {"parallel_tool_calls", "response_format"}
)
_REFUSED = (
    *("logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "seed"),
    *("logit_bias", "functions", "function_call", "modalities", "audio", "prediction"),
    *("reasoning_effort", "service_tier", "web_search_options", "store", "metadata"),
    *("best_of", "suffix", "echo"),
)
"""Known to OpenAI, with no Anthropic counterpart we translate to (``user`` is what becomes
``metadata.user_id``; OpenAI's ``metadata`` is about its stored completions)."""
_NEUTRAL: tuple[Any, ...] = (None, False, 0, "", [], {})
_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}
_FINISH = {
    **dict.fromkeys(("end_turn", "stop_sequence", "pause_turn"), "stop"),
    **dict.fromkeys(("max_tokens", "model_context_window_exceeded"), "length"),
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def build_request(
    group: tuple[EngineRequest, ...], *, config: RemoteConfig, key: Secret, stream: bool = True
) -> tuple[str, dict[str, str], bytes]:
    """URL, headers and body of a streamed Messages API call; refusals raise before any call."""
    first = group[0]
    if first.messages is None:
        raise UnsupportedParameter(
            "prompt", "an Anthropic deployment serves chat only: use chat completions"
        )
    client: dict[str, Any] = dict(first.passthrough or {}) or _from_fields(first)
    if len(group) > 1 or client.get("n") not in (None, 1):
        raise UnsupportedParameter("n", "Anthropic returns one choice per request: n must be 1")
    for name in _REFUSED:
        if client.get(name) not in _NEUTRAL:
            raise UnsupportedParameter(name, "has no equivalent for an Anthropic deployment")
    response_format = client.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise UnsupportedParameter(
            "response_format", "only text is supported for an Anthropic deployment"
        )
    temperature = client.get("temperature")
    if temperature is not None and temperature > 1:
        raise UnsupportedParameter(
            "temperature", f"{temperature} is over 1: must be <= 1 for an Anthropic deployment"
        )
    body = {k: v for k, v in client.items() if k not in _TRANSLATED and k not in _REFUSED}
    system, messages = _messages(client.get("messages"))
    body.update(model=config.model, messages=messages, stream=True)
    if system:
        body["system"] = system
    limits = (
        client[k] for k in ("max_completion_tokens", "max_tokens") if client.get(k) is not None
    )
    body["max_tokens"] = next(limits, DEFAULT_MAX_TOKENS)
    for name in ("temperature", "top_p", "top_k"):
        if client.get(name) is not None:
            body[name] = client[name]
    stop = client.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if client.get("user"):
        body["metadata"] = {"user_id": client["user"]}
    if client.get("tools"):
        body["tools"] = [_tool(t) for t in client["tools"]]
    choice = _tool_choice(client.get("tool_choice"), client.get("parallel_tool_calls"))
    if choice is not None:
        body["tool_choice"] = choice
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "anthropic-version": config.anthropic_version,
        **config.headers,
    }
    if key:
        headers["x-api-key"] = key.reveal()
    return endpoint_url(config.base_url, "/messages"), headers, _encode(body)


def _from_fields(request: EngineRequest) -> dict[str, Any]:
    """A request built in code, not by the gateway: its typed fields in OpenAI's shape (the
    defaults left out: newer Claude models refuse ``temperature`` and ``top_p`` together)."""
    body: dict[str, Any] = msgspec.to_builtins(request.sampling)
    body["messages"] = [msgspec.to_builtins(m) for m in request.messages or ()]
    for name in ("temperature", "top_p"):
        if body[name] == 1.0:
            del body[name]
    return body


def _messages(raw: Any) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the alternating user/assistant turns of OpenAI ``messages``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in raw if isinstance(raw, list) else ():
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
            continue
        if role not in ("user", "assistant", "tool"):
            raise UnsupportedParameter("messages", f"role {role!r} has no Anthropic equivalent")
        if message.get("name"):
            raise UnsupportedParameter("messages", "a message `name` has no Anthropic equivalent")
        if role == "tool":
            role, blocks = "user", [_tool_result(message)]
        else:
            blocks = _blocks(message.get("content"))
            if role == "assistant":
                blocks += [_tool_use(call) for call in message.get("tool_calls") or ()]
        if not blocks:
            continue  # an empty turn says nothing, and Anthropic refuses empty content
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise RequestError(
            "messages: an Anthropic deployment needs a user message besides the system prompt",
            param="messages",
        )
    return "\n\n".join(s for s in system if s), turns


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Content blocks, always a list: merging turns of one role is then a concatenation."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = str(image.get("url", "") if isinstance(image, dict) else image or "")
            if url.startswith("data:"):
                media, _, data = url[5:].partition(";base64,")
                source = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
        elif kind != "text":
            raise UnsupportedParameter(
                "messages", f"content part {kind!r} has no Anthropic equivalent"
            )
    return blocks


def _text(content: Any) -> str:
    """Text only: Anthropic's ``system`` and our tool results carry no images."""
    blocks = _blocks(content)
    if any(b["type"] != "text" for b in blocks):
        raise UnsupportedParameter("messages", "system and tool messages can only hold text")
    return "".join(b["text"] for b in blocks)


def _tool_use(call: Any) -> dict[str, Any]:
    """OpenAI sends a call's arguments as a JSON string, Anthropic wants the object."""
    function = call.get("function") or {}
    try:
        arguments = _decode(function.get("arguments") or "{}")
    except msgspec.DecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise RequestError(
            f"messages: the arguments of tool call {call.get('id')!r} are not a JSON object",
            param="messages",
        )
    return {
        "type": "tool_use",
        "id": call.get("id"),
        "name": function.get("name"),
        "input": arguments,
    }


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    text = _text(message.get("content"))
    if text:
        block["content"] = text
    return block


def _tool(tool: Any) -> dict[str, Any]:
    """Anthropic requires an object ``input_schema``; OpenAI allows ``parameters: {}``."""
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function" or "name" not in function:
        raise UnsupportedParameter("tools", "only function tools translate to Anthropic tools")
    if function.get("strict"):
        raise UnsupportedParameter("tools", "strict function schemas are not translated")
    schema = {"type": "object", **(function.get("parameters") or {})}
    out = {"name": function["name"], "input_schema": schema}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI's ``parallel_tool_calls`` lives in Anthropic's ``tool_choice``."""
    if choice is None:
        out: dict[str, Any] | None = None if parallel is not False else {"type": "auto"}
    elif isinstance(choice, str) and choice in _TOOL_CHOICE:
        out = {"type": _TOOL_CHOICE[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise UnsupportedParameter("tool_choice", f"{choice!r} has no Anthropic equivalent")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


class AnthropicStream:
    """Turns one Messages API stream's events into our chunks (one choice: Anthropic has no n).

    ``ping`` and event types Anthropic may add later are ignored, as its docs ask of clients.
    """

    def __init__(self, group: tuple[EngineRequest, ...]) -> None:
        self.request_id = group[0].request_id
        self.index = group[0].choice_index
        self.usage: Usage | None = None
        self.finished: dict[int, str] = {}
        self.done = False
        self.chunks_out = 0
        self._calls: dict[int, int] = {}
        """Content block index -> OpenAI tool call index (which counts tool calls only)."""
        self._prompt = 0
        self._completion = 0

    whole_body = False
    """Non-streamed replies are not read: an Anthropic call always streams."""

    def feed_read(self, parser: SSEParser, data: bytes) -> list[TokenChunk]:
        """The chunks of one network read, as one batch: all of them, or none (then no token
        counts as sent, and a retry stays allowed)."""
        out: list[TokenChunk] = []
        counted = self.chunks_out
        try:
            for event in parser.feed(data):
                out += self.feed(event)
        except BaseException:
            self.chunks_out = counted
            raise
        return out

    def feed_body(self, body: bytes) -> list[TokenChunk]:
        # never called: ``whole_body`` is False, so the remote core always streams from Anthropic
        raise TypeError("an Anthropic call always streams; there is no whole body to read")

    def feed(self, event: SSEEvent) -> list[TokenChunk]:
        data = event.data.strip()
        if not data:
            return []
        try:
            frame = _decode(data)
        except msgspec.DecodeError:
            frame = None
        if not isinstance(frame, dict):
            raise UpstreamError("malformed SSE from the upstream: a data line is not a JSON object")
        chunk = self._chunk(frame.get("type") or event.event, frame)
        if chunk is None:
            return []
        self.chunks_out += 1
        return [chunk]

    def _chunk(self, kind: Any, frame: dict[str, Any]) -> TokenChunk | None:
        if kind == "content_block_delta":
            delta = frame.get("delta") or {}
            match delta.get("type"):
                case "text_delta":
                    return self._emit(text=delta.get("text") or "")
                case "input_json_delta":
                    call = self._calls.get(int(frame.get("index") or 0))
                    if call is None:
                        raise UpstreamError("the upstream sent tool input outside a tool_use block")
                    if not delta.get("partial_json"):
                        return None
                    function = {"arguments": delta["partial_json"]}
                    return self._emit(extra={"tool_calls": [_call(call, function)]})
                case "thinking_delta" if delta.get("thinking"):
                    return self._emit(extra={"reasoning_content": delta["thinking"]})
        elif kind == "content_block_start":
            block = frame.get("content_block") or {}
            if block.get("type") == "tool_use":
                call = self._calls[int(frame.get("index") or 0)] = len(self._calls)
                function = {"name": block.get("name"), "arguments": ""}
                return self._emit(extra={"tool_calls": [_call(call, function, block.get("id"))]})
            if block.get("type") == "text":
                return self._emit(text=block.get("text") or "")
        elif kind == "message_start":
            self._count((frame.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._count(frame.get("usage"))
            reason = (frame.get("delta") or {}).get("stop_reason")
            if reason:
                self.finished[self.index] = _FINISH.get(reason, "stop")
                return self._emit(finish=self.finished[self.index])
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            message = event_message(frame.get("error"))
            raise UpstreamError(f"the upstream failed mid-stream: {message}")
        return None

    def _emit(
        self, *, text: str = "", extra: dict[str, Any] | None = None, finish: str | None = None
    ) -> TokenChunk | None:
        if not text and not extra and not finish:
            return None
        return TokenChunk(
            request_id=self.request_id,
            index=self.index,
            text=text,
            finish_reason=finish,
            extra=extra,
        )

    def _count(self, usage: Any) -> None:
        """Anthropic counts cached prompt tokens apart; OpenAI's prompt_tokens include them."""
        if not isinstance(usage, dict):
            return
        parts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        if any(usage.get(p) is not None for p in parts):
            self._prompt = sum(int(usage.get(p) or 0) for p in parts)
        if usage.get("output_tokens") is not None:
            self._completion = int(usage["output_tokens"])
        self.usage = Usage(prompt_tokens=self._prompt, completion_tokens=self._completion)


def _call(index: int, function: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    """One tool call delta in OpenAI's streaming shape (the id only on a call's first delta)."""
    call: dict[str, Any] = {"index": index, "type": "function", "function": function}
    if call_id is not None:
        call["id"] = call_id
    return call
