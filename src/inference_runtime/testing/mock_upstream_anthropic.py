"""Anthropic Messages API replies of :class:`~inference_runtime.testing.MockUpstream`, as bytes.

The event sequence and field names follow Anthropic's streaming documentation exactly, so a client
written against the real API (its event dispatch, its usage accounting from ``message_start``
and ``message_delta``) runs unchanged against the mock.
"""

from __future__ import annotations

from typing import Any

import msgspec

from inference_runtime.testing.mock_upstream_replies import Frame, Generation

_encode = msgspec.json.Encoder().encode

MALFORMED_ANTHROPIC = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"te\n\n'
)
_STOP = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}


def anthropic_body(*, rid: str, model: str, gen: Generation, input_tokens: int) -> bytes:
    """The non-streamed Messages API body: one text content block and usage."""
    return _encode(
        {
            "id": rid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": gen.text}],
            "stop_reason": _STOP[gen.finish],
            "stop_sequence": gen.stop_sequence,
            "usage": {"input_tokens": input_tokens, "output_tokens": len(gen.pieces)},
        }
    )


def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def anthropic_frames(*, rid: str, model: str, gen: Generation, input_tokens: int) -> list[Frame]:
    """The Messages API event sequence: ``message_start``, ``content_block_start``, ``ping``,
    one ``content_block_delta`` (``text_delta``) per word, ``content_block_stop``,
    ``message_delta`` (stop reason, output tokens), ``message_stop``."""
    message: dict[str, Any] = {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    frames = [
        Frame(anthropic_event("message_start", {"type": "message_start", "message": message})),
        Frame(
            anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        ),
        Frame(anthropic_event("ping", {"type": "ping"})),
    ]
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    for piece in gen.pieces:
        data = delta + b'"delta":{"type":"text_delta","text":' + _encode(piece) + b"}}\n\n"
        frames.append(Frame(data, True))
    frames.append(
        Frame(anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    )
    frames.append(
        Frame(
            anthropic_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": _STOP[gen.finish],
                        "stop_sequence": gen.stop_sequence,
                    },
                    "usage": {"output_tokens": len(gen.pieces)},
                },
            )
        )
    )
    frames.append(Frame(anthropic_event("message_stop", {"type": "message_stop"})))
    return frames
