"""The varlen backbone pass (real tokens only, attention row by row) gives the padded pass's logprobs and
gradients: fp64 tiny model, bounds from conftest (the fp32 RMSNorms are the only non-fp64 step)."""

import torch

from stratarl.models import load_model
from stratarl.train import varlen
from stratarl.train.batching import collate
from stratarl.train.policy import forward
from stratarl.types import Sample


def _rows(vocab: int) -> list[Sample]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n, k in ((37, 5), (9, 3), (23, 7), (2, 1)):
        ids = torch.randint(3, vocab, (n,), generator=gen).tolist()
        rows.append(Sample(input_ids=ids, loss_mask=[0] * (n - k) + [1] * k, advantage=1.0))
    return rows


def _logp_and_grad(model, batch, packed: bool, monkeypatch):
    monkeypatch.setattr(varlen, "applies", lambda backbone, attn: packed)
    model.zero_grad(set_to_none=True)
    logp = forward(model, batch).logp_BT
    (logp * batch.loss_mask_BT).sum().backward()
    return logp.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_varlen_pass_equals_the_padded_pass(tiny_path, tiny_tokenizer, assert_grads_close, monkeypatch):
    model = load_model(tiny_path, dtype=torch.float64)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped-query heads covered
    batch = collate(_rows(model.config.vocab_size), tiny_tokenizer.pad_token_id)
    assert not bool(batch.attention_mask_BT.all())
    padded, g_padded = _logp_and_grad(model, batch, False, monkeypatch)
    packed, g_packed = _logp_and_grad(model, batch, True, monkeypatch)
    mask = batch.loss_mask_BT > 0
    # logprobs: the same (2L + 1)·2^-24 relative bound on logits of magnitude < 20, doubled by the softmax
    tol = (2 * model.config.num_hidden_layers + 1) * 2.0 ** -24 * 20 * 2
    assert float((packed - padded)[mask].abs().max()) <= tol
    assert bool((packed[~mask] == 0).all())
    assert_grads_close(g_packed, g_padded, model.config.num_hidden_layers)


def test_varlen_applies_only_where_there_is_padding_to_skip(tiny_path):
    model = load_model(tiny_path)
    backbone = model.get_decoder()
    assert varlen.applies(backbone, torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not varlen.applies(backbone, torch.tensor([[1, 1, 1], [1, 1, 1]]))
    assert not varlen.applies(backbone, torch.tensor([[1, 1, 0]]))


def test_short_bf16_rows_attend_in_fp32():
    """A row up to SHORT_ROW tokens in bf16 is attended in fp32 and rounded once: within bf16 rounding
    (unit roundoff 2^-8, relative) of the fp64 attention, plus fp32 accumulation (< 1e-5 of the largest value)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 40, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    exact_inputs = [t.to(torch.bfloat16).to(torch.float64) for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*exact_inputs, is_causal=True)
    out = varlen._causal(*(t.to(torch.bfloat16) for t in (q, k, v)), None)
    assert out.dtype == torch.bfloat16
    err = (out.to(torch.float64) - ref).abs()
    assert bool((err <= 2.0 ** -8 * ref.abs() + 1e-5 * float(ref.abs().max())).all())
