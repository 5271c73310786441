"""Deterministic replies of :class:`~inference_runtime.testing.MockUpstream`, built as bytes.

Everything here is a pure function of the request body, so the same request always gets the same
answer (tests can assert exact text and usage) and the per-request cost stays a few microseconds:
one CRC of the prompt, a small LCG per word, and msgspec encoding of plain dicts. A stream is a
list of ``Frame`` (the bytes of one SSE event and whether a token delay precedes it), so the
server can write it in one go when nothing is scripted, or frame by frame to play a fault.
The OpenAI shapes are here; Anthropic's are in ``mock_upstream_anthropic``.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from inference_runtime.testing.fake_runner import WORDS

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"
_MASK = (1 << 64) - 1


class Frame(NamedTuple):
    """One SSE event as bytes; ``token`` marks where the per-token delay is spent."""

    data: bytes
    token: bool = False


@dataclass(slots=True)
class Generation:
    """The reply of one choice: its pieces (word tokens; the first without a leading space) and
    why it ended (``"stop"``, ``"length"`` or ``"stop_sequence"``)."""

    pieces: list[str]
    finish: str
    stop_sequence: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _content_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` or Anthropic ``content``/``system``: a string,
    or a list of parts whose text parts (and tool results' string content) count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif isinstance(part.get("content"), str | list):
                    parts.append(_content_text(part["content"]))
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def prompt_of(path: str, body: Any) -> str:
    """The prompt text a reply is derived from and that ``fault_for`` markers are matched in."""
    if not isinstance(body, dict):
        return ""
    if path in ("/v1/chat/completions", "/v1/messages"):
        texts = [_content_text(body.get("system"))] if "system" in body else []
        messages = body.get("messages")
        if isinstance(messages, list):
            texts.extend(_content_text(m.get("content")) for m in messages if isinstance(m, dict))
        return "\n".join(texts)
    if path == "/v1/completions":
        return "\n".join(inputs_of(body.get("prompt")))
    if path == "/v1/embeddings":
        return "\n".join(inputs_of(body.get("input")))
    return ""


def inputs_of(value: Any) -> list[str]:
    """Prompts/inputs as texts: a string, a list of strings, a token list or a list of those
    (token ids become words, so a token list of length n counts n tokens)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        return [
            v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else ""
            for v in value
        ]
    return []


def count_words(text: str) -> int:
    return len(text.split())


def generate(
    prompt: str,
    *,
    choice: int,
    natural: int,
    max_tokens: int | None,
    stops: Sequence[str] = (),
) -> Generation:
    """``natural`` words derived from the prompt (capped by ``max_tokens``: then ``"length"``),
    cut before the first stop sequence (then ``"stop_sequence"``)."""
    limit = natural if max_tokens is None else max(0, min(natural, max_tokens))
    x = (zlib.crc32(prompt.encode()) * 0x9E3779B97F4A7C15 + choice * 0xBF58476D1CE4E5B9) & _MASK
    pieces = []
    for position in range(limit):
        x = (x * 6364136223846793005 + 1442695040888963407) & _MASK
        word = WORDS[(x >> 33) % len(WORDS)]
        pieces.append(word if position == 0 else " " + word)
    if stops:
        text = ""
        for i, piece in enumerate(pieces):
            text += piece
            hits = [(text.find(s), s) for s in stops if s and s in text]
            if hits:
                cut, seq = min(hits)
                head = piece[: len(piece) - (len(text) - cut)]
                return Generation(pieces[:i] + ([head] if head else []), "stop_sequence", seq)
    finish = "length" if max_tokens is not None and max_tokens < natural else "stop"
    return Generation(pieces, finish)


def stop_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _openai_finish(gen: Generation) -> str:
    return "stop" if gen.finish == "stop_sequence" else gen.finish


def openai_body(
    *, rid: str, model: str, created: int, chat: bool, gens: list[Generation], prompt_tokens: int
) -> bytes:
    """The single JSON body of a non-streamed chat or text completion."""
    if chat:
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text, "refusal": None},
                "logprobs": None,
                "finish_reason": _openai_finish(g),
            }
            for i, g in enumerate(gens)
        ]
    else:
        choices = [
            {"text": g.text, "index": i, "logprobs": None, "finish_reason": _openai_finish(g)}
            for i, g in enumerate(gens)
        ]
    return _encode(
        {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": _usage(prompt_tokens, sum(len(g.pieces) for g in gens)),
            "system_fingerprint": None,
        }
    )


def openai_frames(
    *,
    rid: str,
    model: str,
    created: int,
    chat: bool,
    gens: list[Generation],
    prompt_tokens: int,
    include_usage: bool,
) -> list[Frame]:
    """A streamed chat or text completion, shaped as OpenAI sends it: (chat) a role delta per
    choice, one content delta per word, a last chunk per choice with ``finish_reason`` and an
    empty delta; with ``include_usage`` every chunk has ``"usage": null`` and a final chunk with
    empty ``choices`` carries the usage; then ``data: [DONE]``."""
    base: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }

    def frame(choice: dict[str, Any], token: bool = False) -> Frame:
        body = {**base, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return Frame(b"data: " + _encode(body) + b"\n\n", token)

    frames: list[Frame] = []
    if chat:
        for i in range(len(gens)):
            delta = {"role": "assistant", "content": "", "refusal": None}
            frames.append(
                frame({"index": i, "delta": delta, "logprobs": None, "finish_reason": None})
            )
    # Word chunks are the bulk of a stream: spliced into bytes around the one encoded string
    # rather than encoded as a whole dict each (the same JSON, a few times cheaper).
    head = b"data: " + _encode(base)[:-1] + b',"choices":['
    tail = b"]" + (b',"usage":null' if include_usage else b"") + b"}\n\n"
    for step in range(max((len(g.pieces) for g in gens), default=0)):
        first = True
        for i, g in enumerate(gens):
            if step < len(g.pieces):
                text = _encode(g.pieces[step])
                if chat:
                    choice = b'{"index":%d,"delta":{"content":%b},' % (i, text)
                else:
                    choice = b'{"text":%b,"index":%d,' % (text, i)
                data = head + choice + b'"logprobs":null,"finish_reason":null}' + tail
                frames.append(Frame(data, first))
                first = False
    for i, g in enumerate(gens):
        finish = _openai_finish(g)
        frames.append(
            frame(
                {"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}
                if chat
                else {"text": "", "index": i, "logprobs": None, "finish_reason": finish}
            )
        )
    if include_usage:
        usage = _usage(prompt_tokens, sum(len(g.pieces) for g in gens))
        frames.append(Frame(b"data: " + _encode({**base, "choices": [], "usage": usage}) + b"\n\n"))
    frames.append(Frame(DONE))
    return frames


def openai_error_frame(error: bytes) -> bytes:
    return b"data: " + error + b"\n\n"


MALFORMED_OPENAI = b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "oops\n\n'
MALFORMED_JSON = b'{"id": "chatcmpl-broken", "choices": [{"message": '


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic vector whose entries are multiples of 1/1024 in [-1, 1), exact in
    float32, so the float and the base64 encodings carry the very same numbers."""
    x = zlib.crc32(text.encode()) | 1
    out = []
    for _ in range(dimensions):
        x = (x * 6364136223846793005 + 1442695040888963407) & _MASK
        out.append(((x >> 40) % 2048 - 1024) / 1024)
    return out


def embeddings_body(*, model: str, body: dict[str, Any], default_dimensions: int) -> bytes:
    """``POST /v1/embeddings``: one vector per input; ``encoding_format: base64`` gives
    little-endian float32 bytes in base64, as OpenAI does (and as its client asks by default)."""
    texts = inputs_of(body.get("input"))
    dims = body.get("dimensions")
    dimensions = dims if isinstance(dims, int) and dims > 0 else default_dimensions
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vector = embedding_vector(text, dimensions)
        value: Any = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if b64 else vector
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(count_words(t) for t in texts)
    return _encode(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 1700000000, "owned_by": "mock-upstream"}


def models_body(models: Sequence[str]) -> bytes:
    return _encode({"object": "list", "data": [model_object(m) for m in models]})
