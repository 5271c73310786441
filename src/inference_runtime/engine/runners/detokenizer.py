"""Incremental detokenization: the text each new token adds, in O(1) tokens per step.

Decoding only a short window (``prefix_offset``..end) keeps the cost flat however long the output
grows; text ending in an incomplete UTF-8 sequence is held until the next token completes it.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    __slots__ = ("ids", "prefix_offset", "read_offset", "tokenizer")

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True)
        full = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            delta: str = full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""
