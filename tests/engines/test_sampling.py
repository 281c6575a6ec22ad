"""The batched sampler: two-level inverse CDF, top-p nucleus, raw logprobs, per-row generators."""

import math

import pytest
import torch

from stratarl.engines import SamplingParams, sampling
from stratarl.engines.sampling import draw, inverse_cdf, nucleus


@pytest.mark.parametrize("u, token", [(0.0, 1), (0.24, 1), (0.25, 3), (0.9999, 3)])
def test_inverse_cdf_by_hand(u, token):
    # weights 0, 1, 0, 3: cumulative 0, 1, 1, 4; target u * 4; first cumulative above it
    assert inverse_cdf(torch.tensor([[0.0, 1.0, 0.0, 3.0]]), torch.tensor([u])).item() == token


def test_inverse_cdf_across_blocks_never_picks_zero_weight():
    w = torch.zeros(3, 1000)
    w[0, 700] = 1.0  # alone, in the third block
    w[1, 255], w[1, 256] = 1.0, 1.0  # the two sides of a block edge
    w[2, 999] = 2.0  # in the padded last block
    for u in (0.0, 0.3, 0.5, 0.999999):
        got = inverse_cdf(w, torch.full((3,), u)).tolist()
        assert got[0] == 700 and got[1] == (255 if u < 0.5 else 256) and got[2] == 999


def test_inverse_cdf_frequencies_follow_the_weights():
    probs = torch.tensor([0.1, 0.0, 0.2, 0.3, 0.4] + [0.0] * 600)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(inverse_cdf(probs.expand(20000, -1), u), minlength=605).float() / 20000
    assert counts[1] == 0 and counts[5:].sum() == 0
    assert torch.allclose(counts[:5], probs[:5], atol=0.015)


def test_nucleus_keeps_the_smallest_set_reaching_top_p(monkeypatch):
    probs = torch.tensor([[0.0625, 0.5, 0.125, 0.3125]] * 2)  # binary fractions: exact sums
    # sorted 0.5, 0.3125, 0.125, 0.0625: mass before each is 0, 0.5, 0.8125, 0.9375
    out = nucleus(probs, torch.tensor([0.8125, 0.8126]))
    assert out[0].tolist() == [0.0, 0.5, 0.0, 0.3125]
    assert out[1].tolist() == [0.0, 0.5, 0.125, 0.3125]
    monkeypatch.setattr(sampling, "TOP_P_CANDIDATES", 2)  # the second row needs 3: full-sort path
    assert torch.equal(nucleus(probs, torch.tensor([0.8125, 0.8126])), out)


def test_draw_returns_raw_logprobs_and_per_row_streams():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 3)
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.5, top_p=0.9),
              SamplingParams(temperature=2.0)]
    gens = [None, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    tokens, logprobs = draw(logits, params, gens)
    assert tokens[0].item() == 0
    raw = torch.log_softmax(logits[0], -1)
    assert torch.allclose(logprobs, raw[tokens], atol=1e-6)
    # the same generator state gives the same token whatever the other rows are
    alone, _ = draw(logits[2:], params[2:], [torch.Generator().manual_seed(2)])
    assert alone.item() == tokens[2].item()
    assert math.isclose(float(torch.exp(raw).sum()), 1.0, rel_tol=1e-6)
