"""``SlotCache``: the KV cache of a whole replica, one row per running sequence.

Per layer, keys and values live in ``[rows, kv_heads, length, head_dim]`` buffers. A sequence
owns a row from its prefill until it leaves; rows are kept contiguous (a freed row takes the last
row's contents), so a decode step reads ``[:n]`` views with no gather. Each row has its own
length: a decode step writes every row at its own position and a mask hides the unused tail.
It is duck-typed for transformers' attention modules, which only call ``update``.
"""

from __future__ import annotations

from typing import Any

import torch


class SlotCache:
    def __init__(
        self,
        *,
        layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        rows: int = 8,
        length: int = 256,
    ) -> None:
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device = dtype, torch.device(device)
        self.rows_cap, self.len_cap = rows, length
        self.keys = [self._empty(rows, length) for _ in range(layers)]
        self.values = [self._empty(rows, length) for _ in range(layers)]
        self.lengths: list[int] = []
        """Tokens held by each live row (its next write position)."""
        self.owner: list[str] = []
        self._rows: torch.Tensor | slice = slice(0, 0)
        self._write: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self._row_index: torch.Tensor = torch.zeros(0, dtype=torch.long)
        self._kv_len = 0

    def _empty(self, rows: int, length: int) -> torch.Tensor:
        shape = (rows, self.kv_heads, length, self.head_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    # -- rows ------------------------------------------------------------------------------

    @property
    def live(self) -> int:
        return len(self.owner)

    def allocate(self, seq_id: str) -> int:
        if self.live == self.rows_cap:
            self._grow(rows=self.rows_cap * 2, length=self.len_cap)
        self.owner.append(seq_id)
        self.lengths.append(0)
        return self.live - 1

    def free(self, row: int) -> str | None:
        """Free ``row``; the last row moves into it. Returns the seq_id that moved, if any."""
        last = self.live - 1
        moved = None
        if row != last:
            used = self.lengths[last]
            for buf in (*self.keys, *self.values):
                buf[row, :, :used] = buf[last, :, :used]
            self.owner[row], self.lengths[row] = self.owner[last], self.lengths[last]
            moved = self.owner[row]
        self.owner.pop()
        self.lengths.pop()
        return moved

    def reserve(self, length: int) -> None:
        """Make every row able to hold ``length`` tokens."""
        if length > self.len_cap:
            new = self.len_cap
            while new < length:
                new *= 2
            self._grow(rows=self.rows_cap, length=new)

    def _grow(self, *, rows: int, length: int) -> None:
        live = self.live
        for layer in range(self.layers):
            for bufs in (self.keys, self.values):
                fresh = self._empty(rows, length)
                fresh[:live, :, : self.len_cap] = bufs[layer][:live]
                bufs[layer] = fresh
        self.rows_cap, self.len_cap = rows, length

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (*self.keys, *self.values))

    # -- one forward -----------------------------------------------------------------------

    def begin(self, rows: torch.Tensor | slice, write: torch.Tensor, kv_len: int) -> None:
        """Set up the next forward: ``write[b, q]`` is where row ``rows[b]``'s q-th new token
        goes; attention then sees the first ``kv_len`` slots of those rows."""
        # index tensors go to the device once per forward, not once per layer
        if isinstance(rows, slice):
            self._row_index = torch.arange(rows.start, rows.stop, device=self.device)[:, None]
        else:
            rows = rows.to(self.device)
            self._row_index = rows[:, None]
        self._rows, self._write, self._kv_len = rows, write.to(self.device), kv_len

    # the few Cache methods transformers may consult besides update (mask sizing, compile checks)
    is_compileable = False

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *_args: Any,
        **_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        rows, row_index, write = self._rows, self._row_index, self._write
        # advanced indices around a slice: the selection is [batch, q, heads, dim]
        keys[row_index, :, write] = key_states.transpose(1, 2).to(self.dtype)
        values[row_index, :, write] = value_states.transpose(1, 2).to(self.dtype)
        return keys[rows, :, : self._kv_len], values[rows, :, : self._kv_len]
