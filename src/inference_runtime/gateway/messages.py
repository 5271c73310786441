"""Chat messages as the edge reads them: every field OpenAI documents, and what a deployment can
see of them.

A local runtime reads text only: a part it cannot see (an image, audio, a file) is a 400 naming
that part, never dropped. A remote deployment forwards the client's messages untouched, so only
what is wrong whatever the provider (a message with nothing in it) is refused for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference_runtime.errors import RequestError, UnsupportedParameter
from inference_runtime.types import ChatMessage

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_UNSEEN_PARTS = frozenset({"image_url", "input_audio", "file"})
"""Content parts a model that reads text cannot see."""


class Message(ChatMessage, frozen=True, omit_defaults=True, gc=False):
    """A ``ChatMessage`` (what engines read) that also knows OpenAI's other message fields, so
    that they are judged here rather than ignored by the decoder."""

    tool_calls: list[dict[str, Any]] | None = None
    """An assistant's calls of tools: such a message may have no content."""
    function_call: dict[str, Any] | None = None
    """The deprecated form of ``tool_calls``."""
    tool_call_id: str | None = None
    """Which call a ``tool`` message answers."""
    refusal: str | None = None
    """An assistant's refusal, as the model gave it."""
    audio: dict[str, Any] | None = None
    """An assistant's earlier audio reply, by id."""


def validate_messages(messages: Sequence[Message], *, remote: bool) -> None:
    """Roles, content present where it must be, and (locally) only what the runtime can see."""
    if not messages:
        raise RequestError("messages must not be empty", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in ROLES:
            raise RequestError(
                f"{where}.role: {message.role!r} is not one of {sorted(ROLES)}",
                param=f"{where}.role",
            )
        _check_content(message, where)
        if not remote:
            _check_local(message, where)


def _check_content(message: Message, where: str) -> None:
    calls = message.role == "assistant" and bool(message.tool_calls or message.function_call)
    if message.content is None or (isinstance(message.content, list) and not message.content):
        if calls:
            return
        raise RequestError(
            f"{where}.content: a {message.role} message needs content (only an assistant "
            "message carrying tool_calls may have none)",
            param=f"{where}.content",
        )


def _check_local(message: Message, where: str) -> None:
    """A local runtime reads the text of a message and nothing else."""
    for name in ("tool_calls", "function_call", "audio"):
        if getattr(message, name) is not None:
            raise UnsupportedParameter(
                f"{where}.{name}", "not supported by this deployment's runtime (text only)"
            )
    if not isinstance(message.content, list):
        return
    for j, part in enumerate(message.content):
        param = f"{where}.content[{j}]"
        kind = part.get("type")
        if kind in _UNSEEN_PARTS:
            raise UnsupportedParameter(
                param, f"this deployment's runtime reads text only; it cannot see {kind} parts"
            )
        if kind != "text":
            raise RequestError(f"{param}.type: {kind!r} is not a text part", param=param)
        if not isinstance(part.get("text"), str):
            raise RequestError(f"{param}.text must be a string", param=f"{param}.text")
