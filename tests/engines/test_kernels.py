"""The engine's decode attention (grouped matmuls over the cache in place) is SDPA's computation."""

import torch

from stratarl.engines.kernels import decode_attention, prefill_attention


def test_decode_attention_equals_sdpa_in_fp64():
    """One new token per row, 6 query heads over 2 K/V heads, ragged cache lengths (additive -inf mask), the
    cache a view of a longer buffer as in the engine: equal to SDPA to fp64 rounding (softmax over ≤ 40 keys
    of O(1) values: ~1e-15 relative; 1e-12 leaves room for the summation order only)."""
    g = torch.Generator().manual_seed(0)
    B, H, K, D, C, L = 5, 6, 2, 8, 64, 40
    buf = torch.randn(2, B, K, C, D, generator=g, dtype=torch.float64)
    q = torch.randn(B, H, 1, D, generator=g, dtype=torch.float64)
    lengths = torch.tensor([40, 1, 17, 33, 8])
    keep = torch.arange(L)[None, None, None, :] < lengths[:, None, None, None]
    mask = torch.zeros(B, 1, 1, L, dtype=torch.float64).masked_fill_(~keep, float("-inf"))
    k, v = buf[0][:, :, :L], buf[1][:, :, :L]
    ours, sdpa = decode_attention(q, k, v, mask), prefill_attention(q, k, v, mask)
    assert ours.shape == sdpa.shape == (B, H, 1, D)
    assert torch.allclose(ours, sdpa, rtol=0, atol=1e-12)
    # row 1 sees one key: its output is that key's value, for each of the 3 query heads of a K/V head
    assert torch.allclose(ours[1, :3, 0], buf[1][1, 0, 0].expand(3, D), rtol=0, atol=1e-12)
