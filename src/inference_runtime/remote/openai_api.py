"""The OpenAI-compatible provider (OpenAI, vLLM, a LiteLLM proxy, Ollama, ...): the upstream
request built from the client's own body, and the upstream's SSE turned into our chunks.

The client's body goes upstream untouched but for ``model`` (the upstream's name), ``n``,
``stream`` and ``include_usage`` (the provider counts the tokens). A streamed client request is
streamed from the upstream (the first token decides whether a retry is still allowed); a
non-streamed one is one non-streamed upstream call: one JSON body, decoded once.

Decoding is typed (``msgspec.Struct`` with only the fields we read, one reused decoder), so the
fields we do not need (``id``, ``model``, ``system_fingerprint``, ...) are skipped, not built.
The delta (or message) itself is decoded into a dict: its fields other than the text
(``tool_calls``, ``refusal``, vendor fields) are handed on as they came.
"""

from __future__ import annotations

from itertools import repeat
from operator import getitem
from typing import Any, NamedTuple, cast

import msgspec

from inference_runtime.errors import UpstreamError
from inference_runtime.remote.config import RemoteConfig, endpoint_url
from inference_runtime.remote.sse import SSEEvent, SSEParser
from inference_runtime.remote.upstream_errors import event_message
from inference_runtime.types import EngineRequest, Secret, TokenChunk, Usage, WordRun

_encode = msgspec.json.Encoder().encode
_OURS = ("role", "content")


def build_request(
    group: tuple[EngineRequest, ...], *, config: RemoteConfig, key: Secret, stream: bool = True
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
    limit = first.sampling.max_tokens
    asked = body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None
    if limit is not None and not asked:
        # a cap the gateway set (serving.max_tokens, a budget's bound): the provider must know
        # it, or it generates past what was reserved and allowed
        body["max_tokens"] = limit
    body["stream"] = stream
    if stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        accept = "text/event-stream"
    else:  # a whole reply always carries its usage
        body.pop("stream_options", None)
        accept = "application/json"
    headers = {"Content-Type": "application/json", "Accept": accept, **config.headers}
    if key:
        headers["Authorization"] = f"Bearer {key.reveal()}"
    path = "/chat/completions" if chat else "/completions"
    return endpoint_url(config.base_url, path), headers, _encode(body)


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


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Choice(msgspec.Struct, gc=False):
    index: int | None = 0
    delta: dict[str, Any] | None = None
    """Chat, streamed."""
    message: dict[str, Any] | None = None
    """Chat, whole."""
    text: str | None = None
    """Completions."""
    finish_reason: str | None = None


class _Frame(msgspec.Struct, gc=False):
    """One streamed chunk, or a whole reply: the fields we read, nothing else (not tracked by
    the garbage collector: decoded data holds no cycles)."""

    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = msgspec.UNSET


class _Delta(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The delta of a streamed word, typed; a delta with any other field (tool calls, vendor
    fields) does not fit, and its frame is decoded again with the delta as a dict."""

    content: str | None = None
    role: str | None = None
    refusal: str | None = None


class _DeltaChoice(msgspec.Struct, gc=False):
    index: int | None = 0
    delta: _Delta | None = None
    text: str | None = None
    finish_reason: str | None = None
    message: None = None


class _DeltaFrame(msgspec.Struct, gc=False):
    choices: list[_DeltaChoice] | None = None
    usage: _Usage | None = None
    error: Any = msgspec.UNSET


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_delta_frame = msgspec.json.Decoder(_DeltaFrame).decode


class OpenAIStream:
    """Turns one upstream response (SSE events, or a whole body) into our chunks, for one
    request's choices."""

    __slots__ = (
        "_word",
        "chunks_out",
        "done",
        "finished",
        "indexes",
        "request_id",
        "usage",
    )

    whole_body = True
    """It can read a non-streamed reply (``feed_body``)."""

    def __init__(self, group: tuple[EngineRequest, ...]) -> None:
        self.request_id = group[0].request_id
        self.indexes = [r.choice_index for r in group]
        self.usage: Usage | None = None
        self.finished: dict[int, str] = {}
        self.done = False
        self.chunks_out = 0
        self._word: _WordTemplate | None = None
        """The bytes around the text of this stream's word frames, once learned."""

    def feed(self, event: SSEEvent) -> list[TokenChunk]:
        return self._feed_payloads([event.data])

    def feed_read(self, parser: SSEParser, data: bytes) -> list[TokenChunk]:
        """The chunks of one network read, as one batch (event types are not read)."""
        return self._feed_payloads(parser.feed_data(data))

    def _feed_payloads(self, payloads: list[bytes]) -> list[TokenChunk]:
        out: list[TokenChunk] = []
        append = out.append
        word = self._word
        if word is not None:  # the template's parts, out of the per-token loop
            head, tail, choice = word
            start, end, rid = len(head), -len(tail) or None, self.request_id
        at, size, more, runs = 0, len(payloads), 0, True
        while at < size:
            data = payloads[at]
            at += 1
            if word is not None and data.startswith(head) and data.endswith(tail):
                # a word frame: the learned bytes around one JSON string, the text
                if runs and at < size and payloads[at].startswith(head):  # more may follow
                    run = self._word_run(payloads, at - 1, word)
                    if run is not None:
                        append(run)
                        at += run.num_tokens - 1
                        more += run.num_tokens - 1  # tokens beyond one a chunk
                        continue
                    runs = False  # one failed try a read: never quadratic in its frames
                try:
                    text = _decode_text(data[start:end])
                except msgspec.DecodeError:
                    pass  # not one string after all: decoded in full below
                else:
                    if text:
                        append(TokenChunk(rid, choice, text))
                    continue
            if not data or data[0] != 0x7B:  # not "{": [DONE], blank, or padded with spaces
                data = data.strip()
                if not data:
                    continue
                if data == b"[DONE]":
                    self.done = True
                    continue
            frame: _Frame | _DeltaFrame
            try:
                frame = typed = _decode_delta_frame(data)
            except msgspec.DecodeError:  # another shape of delta, or malformed: decode again
                frame = _decode(data)
            else:
                if word is None:
                    word = self._word = _learn_word(data, typed, self.indexes)
                    if word is not None:
                        head, tail, choice = word
                        start, end, rid = len(head), -len(tail) or None, self.request_id
            self._frame(frame, out)
        self.chunks_out += len(out) + more
        return out

    def _word_run(self, payloads: list[bytes], at: int, word: _WordTemplate) -> TokenChunk | None:
        """The word frames from ``at`` on, as one chunk (a ``WordRun``), when there are two or
        more: the frames are matched against the template in one pass, and their strings
        are proven to be JSON strings, and not empty, by decoding them all at once. None
        when that fails (a frame that only looks like a word frame, an empty word)."""
        head, tail = word.head, word.tail
        rest = payloads[at:] if at else payloads
        count = len(rest)
        while count and not (rest[count - 1].startswith(head) and rest[count - 1].endswith(tail)):
            count -= 1  # a stream's last frames (the finish, the usage, [DONE]) are no words
        if count < 2:
            return None
        if count < len(rest):
            rest = rest[:count]
        start, end = len(head), -len(tail) or None
        # C-level slices compared as a whole: no Python call per frame
        heads = list(map(getitem, rest, repeat(slice(None, start))))
        tails = list(map(getitem, rest, repeat(slice(end, None)))) if end else [b""] * count
        if heads.count(head) != count or tails.count(tail) != count:
            count = next(  # a frame that is no word in between: the run ends before it
                i
                for i, (h, t) in enumerate(zip(heads, tails, strict=True))
                if h != head or t != tail
            )
            if count < 2:
                return None
            rest = rest[:count]
        encoded = cast("list[bytes]", list(map(getitem, rest, repeat(slice(start, end)))))
        try:
            texts = _decode_texts(b"[" + b",".join(encoded) + b"]")
        except msgspec.DecodeError:
            return None  # not one string each: frame by frame
        if len(texts) != count or "" in texts:
            return None
        return TokenChunk(self.request_id, word.choice, "", words=WordRun(encoded, texts))

    def feed_body(self, body: bytes) -> list[TokenChunk]:
        """The chunks of a whole (non-streamed) reply: one per choice, with all its text."""
        out: list[TokenChunk] = []
        self._frame(_decode(body), out)
        self.done = True
        if out:  # tokens, for the count when the upstream sends no usage (1 per 4 characters)
            self.chunks_out += sum([max(1, len(c.text) // 4) for c in out])
        return out

    def _frame(self, frame: _Frame | _DeltaFrame, out: list[TokenChunk]) -> None:
        if frame.error is not msgspec.UNSET:
            raise UpstreamError(f"the upstream failed mid-stream: {event_message(frame.error)}")
        usage = frame.usage
        if usage is not None:
            self.usage = Usage(
                prompt_tokens=usage.prompt_tokens or 0,
                completion_tokens=usage.completion_tokens or 0,
            )
        choices = frame.choices
        if not choices:
            return
        indexes = self.indexes
        for choice in choices:
            position = choice.index or 0
            if not 0 <= position < len(indexes):
                raise UpstreamError(f"the upstream answered choice {position}, not asked for")
            index = indexes[position]
            fields = choice.delta
            if fields is None:
                fields = choice.message
            extra: dict[str, Any] | None = None
            if fields is None:  # completions
                text = choice.text or ""
            elif isinstance(fields, _Delta):  # chat, typed: a word, the role, a refusal
                text = fields.content or ""
                if fields.refusal is not None:
                    extra = {"refusal": fields.refusal}
            elif len(fields) == 1 and "content" in fields:  # chat: a word, the common case
                text = fields["content"] or ""
            else:  # chat: the role, a finish, tool calls, a refusal, vendor fields
                text = fields.get("content") or ""
                extra = {k: v for k, v in fields.items() if k not in _OURS and v is not None}
                if not extra:
                    extra = None
                elif choice.message is not None and "tool_calls" in extra:
                    extra["tool_calls"] = _indexed(extra["tool_calls"])
            if text.__class__ is not str:
                raise UpstreamError("malformed reply from the upstream: content is not text")
            finish = choice.finish_reason
            if finish:
                self.finished[index] = finish
            elif not text and not extra:
                continue
            out.append(TokenChunk(self.request_id, index, text, finish_reason=finish, extra=extra))


_decode_text = msgspec.json.Decoder(str).decode
_decode_texts = msgspec.json.Decoder(list[str]).decode
_PROBE = "\x00probe\u2028"
"""Put in a learned template's slot, it must come back as the delta's content, nothing else."""


class _WordTemplate(NamedTuple):
    head: bytes
    tail: bytes
    choice: int
    """Our choice index of the frames it matches."""


def _learn_word(data: bytes, frame: _DeltaFrame, indexes: list[int]) -> _WordTemplate | None:
    """The template of a word frame: ``data`` cut around its content's encoding, when that
    is a plain word frame (one choice, only text, no finish, no usage) whose encoding
    occurs once. Proven before use: the template with another string in the slot must
    decode to that string as the content and to this frame in everything else. A frame that
    matches it later (the same bytes around one JSON string) then means exactly that."""
    if frame.usage is not None or frame.error is not msgspec.UNSET or not frame.choices:
        return None
    if len(frame.choices) != 1:
        return None
    choice = frame.choices[0]
    delta = choice.delta
    if (
        delta is None
        or not delta.content
        or delta.role is not None
        or delta.refusal is not None
        or choice.finish_reason is not None
        or choice.text is not None
    ):
        return None
    encoded = _encode(delta.content)
    at = data.find(encoded)
    if at < 0 or data.find(encoded, at + 1) >= 0:
        return None  # encoded otherwise by the upstream, or not only there
    head, tail = data[:at], data[at + len(encoded) :]
    try:
        probe = _decode_delta_frame(head + _encode(_PROBE) + tail)
    except msgspec.DecodeError:
        return None
    if probe != msgspec.structs.replace(
        frame, choices=[msgspec.structs.replace(choice, delta=_Delta(content=_PROBE))]
    ):
        return None
    position = choice.index or 0
    if not 0 <= position < len(indexes):
        return None
    return _WordTemplate(head, tail, indexes[position])


def _decode(data: bytes) -> _Frame:
    try:
        return _decode_frame(data)
    except msgspec.ValidationError as error:
        raise UpstreamError(f"malformed reply from the upstream: {error}") from None
    except msgspec.DecodeError:
        raise UpstreamError("malformed reply from the upstream: not JSON") from None


def _indexed(calls: Any) -> Any:
    """A whole message's tool calls carry no ``index`` (a stream's deltas do): their position
    is their index, so that they stay apart when the reply is assembled."""
    if not isinstance(calls, list):
        return calls
    return [
        {"index": i, **call} if isinstance(call, dict) and "index" not in call else call
        for i, call in enumerate(calls)
    ]
