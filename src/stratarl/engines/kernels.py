"""The decoder forward pass used by the `hf` engine, over a batched KV cache.

Written for the Llama / Qwen2 family (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU;
Qwen2's q/k/v biases), reading the weights of a transformers model. Differences from transformers'
own forward, all for speed on a CPU: q/k/v and gate/up projections fused into single matmuls, one
KV tensor for the whole batch (`[layers, 2, rows, kv_heads, capacity, head_dim]`), and logits only
for the positions that are sampled.

The pass runs on whichever device the weights are on (`extract_weights` keeps the model's). The one
CPU-only fast path, bf16 weights prepacked for oneDNN (`make_linear`), is taken only for CPU weights;
on CUDA the same `Linear` is plain `F.linear`, its reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


@dataclass
class Linear:
    """A weight ready for `x @ w.T (+ b)`: prepacked for oneDNN when the dtype is bf16 on a CPU (about
    1.7x faster here than `F.linear`, bit-identical), the plain tensor otherwise (fp32, or any GPU)."""

    weight: torch.Tensor
    """Plain [out, in] weight, or oneDNN's packed layout when `packed`."""
    bias: torch.Tensor | None
    """Bias or None."""
    packed: bool
    """Whether `weight` is prepacked."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def make_linear(w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype, batch_hint: int = 64) -> Linear:
    w = w.detach().to(dtype).contiguous()
    b = b.detach().to(dtype) if b is not None else None
    # oneDNN packing is a CPU kernel: weights on any other device keep the plain F.linear path
    if dtype == torch.bfloat16 and w.device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            return Linear(torch.ops.mkldnn._reorder_linear_weight(w, batch_hint), b, True)
        except (RuntimeError, AttributeError):
            pass
    return Linear(w, b, False)


@dataclass
class LayerWeights:
    """One decoder block's weights, fused for fewer matmuls."""

    ln1: torch.Tensor
    """Input RMSNorm weight."""
    qkv: Linear
    """[q; k; v] projection (with Qwen2's biases)."""
    o: Linear
    """Attention output projection."""
    ln2: torch.Tensor
    """Post-attention RMSNorm weight."""
    gate_up: Linear
    """[gate; up] projection."""
    down: Linear
    """MLP down projection."""


@dataclass
class DecoderWeights:
    """Everything the forward pass needs, in the engine's dtype."""

    embed: torch.Tensor
    """Token embeddings [vocab, hidden]."""
    layers: list[LayerWeights]
    """The blocks."""
    norm: torch.Tensor
    """Final RMSNorm weight."""
    lm_head: Linear
    """Output projection (a copy of `embed` when the model ties them)."""
    n_heads: int
    """Query heads."""
    n_kv: int
    """Key/value heads."""
    head_dim: int
    """Per-head width."""
    eps: float
    """RMSNorm epsilon."""
    inv_freq: torch.Tensor
    """Rotary inverse frequencies [head_dim / 2] (fp32)."""


def extract_weights(model: nn.Module, dtype: torch.dtype) -> DecoderWeights:
    """Fused copies of a Llama/Qwen2-family model's weights, on the device the model is on."""
    cfg = model.config
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": getattr(cfg, "rope_theta", 10000.0)}
    if rope.get("rope_type", "default") not in ("default", None):
        raise UserError(f"the hf engine supports plain rotary embeddings, not rope_type={rope['rope_type']}")
    decoder = model.get_decoder()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    layers = [_layer(block, dtype) for block in decoder.layers]
    # computed on the CPU and then moved, so that every device rotates by the same frequencies
    inv_freq = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    inv_freq = inv_freq.to(decoder.embed_tokens.weight.device)
    return DecoderWeights(
        embed=decoder.embed_tokens.weight.detach().to(dtype), layers=layers,
        norm=decoder.norm.weight.detach().to(dtype), lm_head=make_linear(model.get_output_embeddings().weight, None, dtype),
        n_heads=cfg.num_attention_heads, n_kv=cfg.num_key_value_heads, head_dim=head_dim,
        eps=cfg.rms_norm_eps, inv_freq=inv_freq,
    )


def _layer(block: nn.Module, dtype: torch.dtype) -> LayerWeights:
    a, m = block.self_attn, block.mlp
    biases = [p.bias for p in (a.q_proj, a.k_proj, a.v_proj)]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    return LayerWeights(
        ln1=block.input_layernorm.weight.detach().to(dtype),
        qkv=make_linear(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), bias, dtype),
        o=make_linear(a.o_proj.weight, a.o_proj.bias, dtype),
        ln2=block.post_attention_layernorm.weight.detach().to(dtype),
        gate_up=make_linear(torch.cat([m.gate_proj.weight, m.up_proj.weight]), None, dtype),
        down=make_linear(m.down_proj.weight, m.down_proj.bias, dtype),
    )


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """In fp32, then back (as transformers does): a bf16 mean of squares drifts enough to flip tokens."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + d/2), as transformers' Llama does. x: [B, H, T, D]; cos/sin: [B, 1, T, D]."""
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def rope_tables(w: DecoderWeights, pos_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = pos_BT.float()[..., None] * w.inv_freq  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q [B, H, T, D] over the cache k, v [B, K, L, D] (H a multiple of K) with the additive mask [B, 1, T, L]."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`prefill_attention` for one new token per row (T = 1), as two batched matmuls per K/V head group: the
    H / K query heads sharing a K/V head are one [G, D] @ [D, L] product, so the cache is read in place
    (SDPA with `enable_gqa` and a mask copies it, expanded to H heads: ~3× slower in decode on 2 cores).
    Scores and softmax in at least fp32."""
    B, H, _, D = q.shape
    K = k.shape[1]
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.reshape(B, K, H // K, D), k.transpose(-1, -2)).to(acc) * D ** -0.5  # [B, K, G, L]
    probs = torch.softmax(scores + mask.to(acc), dim=-1).to(v.dtype)
    return torch.matmul(probs, v).reshape(B, H, 1, D)


def forward(w: DecoderWeights, kv: torch.Tensor, rows: slice, ids_BT: torch.Tensor, start_B: torch.Tensor,
            n_B: torch.Tensor) -> torch.Tensor:
    """Run new tokens through the model, writing their K/V into `kv[:, :, rows]`.

    Row b holds `start_B[b]` cached tokens and gets `n_B[b]` new ones (`ids_BT` right-padded).
    Returns the final hidden state of each row's last new token, [B, hidden].
    Every tensor argument is on the weights' device.
    """
    B, T = ids_BT.shape
    dtype, dev = w.embed.dtype, w.embed.device
    pos_BT = start_B[:, None] + torch.arange(T, device=dev)[None, :]
    valid_BT = torch.arange(T, device=dev)[None, :] < n_B[:, None]
    length = int((start_B + n_B).max())
    # query t of row b sees keys j <= start_b + t (its cache, then new tokens causally)
    mask = torch.arange(length, device=dev)[None, None, :] <= pos_BT[:, :, None]  # [B, T, L]
    # additive mask in the compute dtype, built once per pass instead of converted in every layer: [B, 1, T, L]
    mask = torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill_(~mask, float("-inf"))[:, None]
    cos, sin = rope_tables(w, pos_BT, dtype)
    b_idx, t_idx = valid_BT.nonzero(as_tuple=True)
    x = F.embedding(ids_BT, w.embed)
    H, K, D = w.n_heads, w.n_kv, w.head_dim
    for li, lw in enumerate(w.layers):
        h = rms_norm(x, lw.ln1, w.eps)
        qkv = lw.qkv(h).view(B, T, H + 2 * K, D).transpose(1, 2)  # [B, H+2K, T, D]
        qk = rotary(qkv[:, : H + K], cos, sin)  # q and k heads rotated together
        q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + K:]
        cache = kv[li, :, rows]  # [2, B, K, C, D] view
        dst = pos_BT[b_idx, t_idx]
        cache[0][b_idx, :, dst] = k[b_idx, :, t_idx]
        cache[1][b_idx, :, dst] = v[b_idx, :, t_idx]
        attend = decode_attention if T == 1 else prefill_attention
        att = attend(q, cache[0][:, :, :length], cache[1][:, :, :length], mask)
        x = x + lw.o(att.transpose(1, 2).reshape(B, T, H * D))
        h = rms_norm(x, lw.ln2, w.eps)
        gu = lw.gate_up(h)
        inter = gu.shape[-1] // 2
        x = x + lw.down(F.silu(gu[..., :inter]) * gu[..., inter:])
    last = x[torch.arange(B, device=dev), (n_B - 1).clamp(min=0)]
    return rms_norm(last, w.norm, w.eps)


def logits(w: DecoderWeights, hidden_B: torch.Tensor) -> torch.Tensor:
    return w.lm_head(hidden_B).float()
