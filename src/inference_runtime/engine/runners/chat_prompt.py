"""A request as token ids, through a Hugging Face tokenizer: its chat template for messages (a
plain role-prefixed transcript when the model has none), the text as it is for prompts.

Shared by every runner that tokenizes itself (transformers, vLLM); imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from inference_runtime.errors import ContextPoisoned
from inference_runtime.types import EngineRequest


def encode_request(tokenizer: Any, request: EngineRequest) -> tuple[list[int], str]:
    """(token ids, the text they encode)."""
    if tokenizer is None:
        raise ContextPoisoned("the model is not loaded yet")
    if request.messages is not None:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = request.prompt or ""
        ids = tokenizer(text)["input_ids"]
    return list(ids), text
