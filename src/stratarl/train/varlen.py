"""The backbone on the real tokens of a padded batch only ("varlen"): rows are concatenated into one
sequence, every linear layer runs on real tokens, and attention runs row by row with the causal kernel;
the hidden states are put back in the padded layout, so everything downstream is unchanged.

A padded micro-batch costs its widest row times its row count, in the linear layers and (quadratically)
in attention: SFT batches that mix 150-token strategy rows with 1,700-token chat rows pay for padding
more than for their tokens. Each real token's computation is the one of the padded pass (same row, same
positions, same causal kernel per row); `tests/train/test_varlen.py` checks it in fp64.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

NAME = "stratarl_varlen"


def rows_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                   **kwargs) -> tuple[torch.Tensor, None]:
    """Causal attention of each row of a packed [1, H, N, D] sequence, rows cut at `cu_seq_lens_q`."""
    cuts = kwargs["cu_seq_lens_q"]
    lengths = [b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    # split, not a slice per row: the backward of one split is one concatenation, while each slice's
    # backward writes its gradient into a zero tensor of the whole sequence (rows x sequence traffic)
    rows = zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2), strict=True)
    outs = [_causal(q, k, v, scaling) for q, k, v in rows]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


SHORT_ROW = 512
"""Rows up to this length attend in fp32 when the pass runs in bf16: the CPU flash kernel's bf16 backward
costs 2.6 ms for a 150-token row (6 heads of 32) and its fp32 one 0.6 ms; at 1,500 tokens the two cost
the same (docs/performance.md)."""


def _causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float | None) -> torch.Tensor:
    if q.dtype == torch.bfloat16 and q.shape[2] <= SHORT_ROW:
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, scale=scaling)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)


def _no_mask(*args, **kwargs) -> None:
    """The mask of a varlen pass: none (each row's attention is causal by itself)."""
    return None


@functools.cache
def _register() -> None:
    """Make NAME a transformers attention implementation (on first use: importing transformers costs a
    command that only reads its config ~3 s)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, rows_attention)
    AttentionMaskInterface.register(NAME, _no_mask)


def applies(backbone: nn.Module, attention_mask_BT: torch.Tensor) -> bool:
    """Worth it and exact: padding to skip, and every layer attends causally over its whole row."""
    types = set(getattr(backbone.config, "layer_types", None) or ["full_attention"])
    return attention_mask_BT.shape[0] > 1 and types == {"full_attention"} and not bool(attention_mask_BT.all())


@contextlib.contextmanager
def _implementation(config, name: str) -> Iterator[None]:
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old


def hidden_states(backbone: nn.Module, ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor,
                  positions_BT: torch.Tensor) -> torch.Tensor:
    """The backbone's last hidden states [B, T, H] for right-padded rows, computed on real tokens only
    (zeros at padding)."""
    real_BT = attention_mask_BT.bool()
    lengths = real_BT.sum(-1).tolist()
    cuts = [0]
    for n in lengths:
        cuts.append(cuts[-1] + n)
    _register()
    with _implementation(backbone.config, NAME):
        packed = backbone(input_ids=ids_BT[real_BT][None], position_ids=positions_BT[real_BT][None],
                          attention_mask=None, use_cache=False, cu_seq_lens_q=cuts).last_hidden_state[0]
    out = packed.new_zeros((*ids_BT.shape, packed.shape[-1]))
    return out.index_put(real_BT.nonzero(as_tuple=True), packed)
