"""A KV prefix cache at block granularity (the idea behind vLLM's automatic prefix caching).

A prompt is cut into blocks of `block` tokens; block i is keyed by a hash of all tokens up to its
end, so a key identifies a whole prefix. A new request copies the K/V of its longest cached prefix
into its cache row and only prefills the rest — a group's shared task + strategy prefix is computed
once, and a multi-turn prompt that extends the previous turn recomputes only the new tokens.
Entries are evicted least-recently-used beyond a memory budget.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class PrefixCache:
    """Blocks of K/V: key -> tensor [layers, 2, kv_heads, block, head_dim]."""

    def __init__(self, block: int = 16, budget_bytes: int = 1 << 30):
        self.block = block
        self.budget = budget_bytes
        self.used = 0
        self._blocks: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.lookups = 0

    def keys(self, tokens: list[int]) -> list[int]:
        """Chained hashes of the full blocks of `tokens`."""
        out, h = [], 0
        for i in range(len(tokens) // self.block):
            h = hash((h, tuple(tokens[i * self.block:(i + 1) * self.block])))
            out.append(h)
        return out

    def match(self, tokens: list[int], limit: int) -> list[torch.Tensor]:
        """The cached blocks of the longest prefix of `tokens` no longer than `limit` tokens."""
        found = []
        for key in self.keys(tokens[:limit]):
            block = self._blocks.get(key)
            if block is None:
                break
            self._blocks.move_to_end(key)
            found.append(block)
        self.lookups += len(tokens[:limit]) // self.block
        self.hits += len(found)
        return found

    def insert(self, tokens: list[int], kv_row: torch.Tensor, length: int) -> None:
        """Store the full blocks of the first `length` tokens, whose K/V are in `kv_row`
        ([layers, 2, kv_heads, capacity, head_dim])."""
        if self.budget <= 0:
            return
        for i, key in enumerate(self.keys(tokens[:length])):
            if key in self._blocks:
                self._blocks.move_to_end(key)
                continue
            block = kv_row[:, :, :, i * self.block:(i + 1) * self.block].clone()
            self._blocks[key] = block
            self.used += block.numel() * block.element_size()
        while self.used > self.budget and self._blocks:
            _, old = self._blocks.popitem(last=False)
            self.used -= old.numel() * old.element_size()

    def clear(self) -> None:
        self._blocks.clear()
        self.used = 0

    def __len__(self) -> int:
        return len(self._blocks)
