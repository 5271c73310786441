"""OpenAI response bodies and SSE frames, built as bytes on the hot path.

Streaming follows OpenAI byte for byte in shape: ``data: {json}\\n\\n`` per chunk, each choice's
first delta carries the role, the last its ``finish_reason``; with
``stream_options.include_usage`` every chunk has ``"usage": null`` and a final chunk with empty
``choices`` carries the usage; then ``data: [DONE]``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from inference_runtime.types import TokenChunk, Usage

DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.Encoder().encode


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _logprobs(chunks: list[TokenChunk], *, chat: bool) -> dict[str, Any] | None:
    entries = [lp for c in chunks if c.logprobs for lp in c.logprobs]
    if not entries:
        return None
    if chat:
        return {
            "content": [
                {
                    "token": text,
                    "logprob": lp,
                    "bytes": list(text.encode()),
                    "top_logprobs": [
                        {"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in top
                    ],
                }
                for text, lp, top in entries
            ]
        }
    return {
        "tokens": [text for text, _, _ in entries],
        "token_logprobs": [lp for _, lp, _ in entries],
        "top_logprobs": [dict(top) for _, _, top in entries],
        "text_offset": [],
    }


class StreamEncoder:
    """Turns token chunks into SSE frames for one streamed response.

    A frame is the bytes msgspec would give for the dict ``{id, object, created, model,
    choices: [choice], usage: null}``, spliced around the parts that change (the choice's
    index, delta, finish reason): the constant head and tail are encoded once per response.
    """

    __slots__ = ("_around", "_base", "_chat", "_head", "_include_usage", "_started", "_tail")

    def __init__(self, *, response_id: str, model: str, chat: bool, include_usage: bool) -> None:
        self._chat = chat
        self._include_usage = include_usage
        self._started: set[int] = set()
        self._base = {
            "id": response_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self._head = b"data: " + _encode(self._base)[:-1] + b',"choices":[{"index":'
        self._tail = b"}]" + (b',"usage":null' if include_usage else b"") + b"}\n\n"
        self._around: dict[int, tuple[bytes, bytes]] = {}

    def frames(self, chunks: list[TokenChunk]) -> bytes:
        out: list[bytes] = []
        append, started, around = out.append, self._started, self._around
        for chunk in chunks:
            words = chunk.words
            if words is not None:  # words still encoded: our bytes around the upstream's strings
                if chunk.index in started or not self._chat:
                    parts = around.get(chunk.index) or self._around_text(chunk.index)
                    append(parts[0])
                    append((parts[1] + parts[0]).join(words.encoded))
                    append(parts[1])
                else:  # a choice's first words: the role goes with the first
                    append(self.frames(chunk.expanded()))
                continue
            text = chunk.text
            if (
                text
                and chunk.finish_reason is None
                and not chunk.extra
                and not chunk.logprobs
                and (chunk.index in started or not self._chat)
            ):  # a word, the bulk of a stream: its encoded text between constant bytes
                parts = around.get(chunk.index) or self._around_text(chunk.index)
                append(parts[0])
                append(_encode(text))
                append(parts[1])
            elif text or chunk.finish_reason or chunk.logprobs or chunk.extra:
                append(self._frame(chunk))
            # else: a token held back (possible stop string) or with no text
        return b"".join(out)

    def _around_text(self, index: int) -> tuple[bytes, bytes]:
        """The bytes before and after the encoded text of a word frame of choice ``index``."""
        field = b'"delta":{"content":' if self._chat else b'"text":'
        close = b"}" if self._chat else b""
        parts = (
            b"%b%d,%b" % (self._head, index, field),
            b'%b,"logprobs":null,"finish_reason":null%b' % (close, self._tail),
        )
        self._around[index] = parts
        return parts

    def _frame(self, chunk: TokenChunk) -> bytes:
        logprobs = _encode(_logprobs([chunk], chat=self._chat)) if chunk.logprobs else b"null"
        finish = b"null" if chunk.finish_reason is None else _encode(chunk.finish_reason)
        if self._chat:
            index = chunk.index
            if index not in self._started:
                self._started.add(index)
                delta: dict[str, Any] = {"role": "assistant", "content": chunk.text}
            elif chunk.text:
                if not chunk.extra:  # the common case: a word, and nothing else
                    return b'%b%d,"delta":{"content":%b},"logprobs":%b,"finish_reason":%b%b' % (
                        self._head, index, _encode(chunk.text), logprobs, finish, self._tail
                    )  # fmt: skip
                delta = {"content": chunk.text}
            else:
                delta = {}
            if chunk.extra:
                delta.update(chunk.extra)  # a provider's tool_calls, refusal, ...
            return b'%b%d,"delta":%b,"logprobs":%b,"finish_reason":%b%b' % (
                self._head, index, _encode(delta), logprobs, finish, self._tail
            )  # fmt: skip
        return b'%b%d,"text":%b,"logprobs":%b,"finish_reason":%b%b' % (
            self._head, chunk.index, _encode(chunk.text), logprobs, finish, self._tail
        )  # fmt: skip

    def usage_frame(self, usage: Usage) -> bytes:
        if not self._include_usage:
            return b""
        body: dict[str, Any] = {**self._base, "choices": [], "usage": usage_dict(usage)}
        return b"data: " + _encode(body) + b"\n\n"


def error_frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _merged_extra(parts: list[TokenChunk]) -> dict[str, Any]:
    """A provider's streamed deltas folded into one message: ``tool_calls`` pieces join by
    index (arguments concatenated, as OpenAI streams them), other fields keep the last value."""
    merged: dict[str, Any] = {}
    calls: dict[int, dict[str, Any]] = {}
    for chunk in parts:
        for key, value in (chunk.extra or {}).items():
            if key != "tool_calls":
                merged[key] = value
                continue
            for piece in value or ():
                call = calls.setdefault(int(piece.get("index", 0)), {"function": {}})
                for field in ("id", "type"):
                    if piece.get(field):
                        call[field] = piece[field]
                function = piece.get("function") or {}
                if function.get("name"):
                    call["function"]["name"] = function["name"]
                arguments = function.get("arguments") or ""
                call["function"]["arguments"] = call["function"].get("arguments", "") + arguments
    if calls:
        merged["tool_calls"] = [calls[i] for i in sorted(calls)]
    merged.pop("role", None)
    return merged


def completion_body(
    *,
    response_id: str,
    model: str,
    chat: bool,
    chunks: list[TokenChunk],
    choices: int,
    usage: Usage,
) -> bytes:
    """The single JSON body of a non-streamed response."""
    for chunk in chunks:
        if chunk.words is not None:
            chunks = [part for chunk in chunks for part in chunk.expanded()]
            break
    if choices == 1 and all([c.index == 0 for c in chunks]):
        groups: Iterable[tuple[int, list[TokenChunk]]] = ((0, chunks),)  # the common case
    else:
        by_index: dict[int, list[TokenChunk]] = {i: [] for i in range(choices)}
        for chunk in chunks:
            by_index.setdefault(chunk.index, []).append(chunk)
        groups = sorted(by_index.items())
    out = []
    for index, parts in groups:
        text = "".join([c.text for c in parts])
        finish = None
        for c in reversed(parts):
            if c.finish_reason:
                finish = c.finish_reason
                break
        plain = not any([c.logprobs or c.extra for c in parts])  # text only: the common case
        logprobs = None if plain else _logprobs(parts, chat=chat)
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            if not plain:
                message.update(_merged_extra(parts))
            if message.get("tool_calls") and not text:
                message["content"] = None
            out.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            )
        else:
            out.append(
                {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
            )
    return _encode(
        {
            "id": response_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": out,
            "usage": usage_dict(usage),
        }
    )
