"""Losses against numbers worked out by hand, and micro-batching that leaves gradients unchanged."""

import math

import pytest
import torch

from stratarl.algos.losses import (
    LossConfig,
    aggregate,
    contrastive_when_to_act_loss,
    dpo_loss,
    entropy_from_logits,
    gspo_loss,
    keep_explored,
    kl_penalty,
    policy_objective,
    ppo_clip_loss,
    sft_loss,
    steca_loss,
    steca_weight,
    truncated_is_weights,
    value_loss,
)

T = torch.tensor


def _one(ratio, adv, **kw):
    loss, clipped = ppo_clip_loss(T([[math.log(ratio)]]), T([[0.0]]), T([[adv]]), **kw)
    return loss.item(), bool(clipped.item())


def test_ppo_clip_cases():
    assert _one(1.5, 1.0) == (pytest.approx(-1.2), True)     # -min(1.5, 1.2)
    assert _one(1.5, -1.0) == (pytest.approx(1.5), False)    # max(1.5, 1.2)
    assert _one(0.5, 1.0) == (pytest.approx(-0.5), False)    # max(-.5, -.8)
    assert _one(0.5, -1.0) == (pytest.approx(0.8), True)     # max(.5, .8)
    assert _one(5.0, -1.0) == (pytest.approx(3.0), False)    # max(5, 1.2) = 5, dual clip min(5, 3) = 3
    assert _one(5.0, -1.0, dual_clip=0.0) == (pytest.approx(5.0), False)
    # clip-higher: ratio 1.25 survives eps_high = .28 but not .2
    assert _one(1.25, 1.0, clip_high=0.28)[0] == pytest.approx(-1.25)
    assert _one(1.25, 1.0)[0] == pytest.approx(-1.2)
    assert _one(0.7, 1.0, clip_low=0.2)[0] == pytest.approx(-0.7)  # low side only bites for A < 0
    huge, _ = ppo_clip_loss(T([[1000.0]]), T([[0.0]]), T([[-1.0]]), dual_clip=0.0)
    assert math.isfinite(huge.item()) and huge.item() == pytest.approx(math.exp(20))  # log-ratio clamped at 20


def test_gspo_sequence_ratio():
    # log-ratios [log 2, 0] -> mean log 2 / 2 -> s = sqrt(2) = 1.414 > 1.2 -> clipped: -1.2 on both tokens
    loss, clipped = gspo_loss(T([[math.log(2), 0.0, 9.0]]), T([[0.0, 0.0, 0.0]]), T([[1.0, 1.0, 1.0]]), T([[1.0, 1.0, 0.0]]))
    assert loss[0, :2].tolist() == pytest.approx([-1.2, -1.2]) and clipped[0, 0]
    loss, _ = gspo_loss(T([[math.log(1.1)]]), T([[0.0]]), T([[2.0]]), T([[1.0]]))
    assert loss.item() == pytest.approx(-2.2)


def test_aggregations_by_hand():
    loss, mask = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(7 / 3)          # (1+2+4)/3
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(2.75)  # (1.5 + 4)/2
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx(3.5)    # (3 + 4)/2
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm=10).item() == pytest.approx(0.35)  # 7/(10*2)
    assert aggregate(loss, mask, "token-mean", total_tokens=7).item() == pytest.approx(1.0)
    assert aggregate(loss, torch.zeros(2, 3), "token-mean").item() == 0.0  # all masked: 0, not NaN


def test_kl_entropy_is():
    lp, ref = T([-1.0]), T([-2.0])  # d = 1
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(-1))  # e^-1 + 1 - 1
    assert kl_penalty(T([30.0]), T([0.0]), "k1").item() == 10.0
    assert kl_penalty(T([0.0]), T([30.0]), "k3").item() == 10.0
    assert entropy_from_logits(torch.zeros(3, 8)).tolist() == pytest.approx([math.log(8)] * 3)
    assert truncated_is_weights(T([-1.0, -2.0]), T([-2.0, -1.0]), cap=2.0).tolist() == pytest.approx([2.0, math.exp(-1)])


def test_supervised_and_preference_losses():
    logp, mask = T([[-1.0, -2.0], [-3.0, -4.0]]), torch.ones(2, 2)
    assert sft_loss(logp, mask, T([1.0, 2.0])).item() == pytest.approx(17 / 4)  # (1+2+6+8)/4
    assert sft_loss(logp, T([[0.0, 1.0], [0.0, 0.0]])).item() == pytest.approx(2.0)  # only token (0,1) trained
    # contrastive: P_ch=-1, P_rej=-2: log(1+e^-1) + .2*1
    assert contrastive_when_to_act_loss(T([-1.0]), T([-2.0])).item() == pytest.approx(math.log1p(math.exp(-1)) + 0.2)
    # DPO: (pc-rc) - (pr-rr) = .5 - (-.5) = 1; beta .1 -> log(1+e^-.1) = .644397; + NLL .5
    pc, pr, rc, rr = T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5])
    assert dpo_loss(pc, pr, rc, rr, beta=0.1).item() == pytest.approx(math.log1p(math.exp(-0.1)))
    assert dpo_loss(pc, pr, rc, rr, 0.1, 1.0, T([0.5])).item() == pytest.approx(math.log1p(math.exp(-0.1)) + 0.5)
    # STeCa with beta 0 is the weighted NLL: mean(1.1*2, .9*4) = 2.9
    nll, w = T([2.0, 4.0]), T([1.1, 0.9])
    assert steca_loss(pc.repeat(2), pr.repeat(2), rc.repeat(2), rr.repeat(2), nll, w, beta=0.0).item() == pytest.approx(2.9)
    with_pref = steca_loss(pc, pr, rc, rr, T([2.0]), T([1.0]), beta=0.1).item()
    assert with_pref == pytest.approx(2.0 + math.log1p(math.exp(-0.1)))
    assert steca_weight("calibrated", 0.5) == pytest.approx(1.005) and steca_weight("expert", 0.5) == pytest.approx(1.005)
    assert steca_weight("explored", 0.5) == pytest.approx(0.995)
    assert keep_explored(0.012) and not keep_explored(0.013)


def test_value_loss_clipping():
    # V=[1,2], G=0, V_old=.5: unclipped [1,4]; clipped V = .7 -> .49; max -> [1,4]; .5*mean = 1.25
    assert value_loss(T([1.0, 2.0]), T([0.0, 0.0]), T([0.5, 0.5])).item() == pytest.approx(1.25)
    # V=0, V_old=.5, G=1: unclipped 1; clipped V=.3 -> .49; max 1 -> .5
    assert value_loss(T([0.0]), T([1.0]), T([0.5])).item() == pytest.approx(0.5)
    assert value_loss(T([0.6]), T([1.0])).item() == pytest.approx(0.08)


def test_policy_objective_parts():
    lp, old, adv, mask = T([[0.0, -1.0]]), T([[0.0, -1.0]]), T([[1.0, 1.0]]), T([[0.0, 1.0]])
    cfg = LossConfig(kl_coef=0.5, kl_kind="k1", entropy_coef=0.1, importance_correction=False)
    loss, stats = policy_objective(lp, old, adv, mask, cfg, total_tokens=1, total_rows=1, ref_BT=T([[0.0, -2.0]]),
                                   entropy_BT=T([[0.0, 2.0]]))
    # token 1: -1 (ratio 1, A 1) + .5 * (k1 = 1) - .1 * 2 = -.7
    assert loss.item() == pytest.approx(-0.7) and stats.kl == pytest.approx(1.0) and stats.entropy == pytest.approx(2.0)
    tis = LossConfig(kl_coef=0.0, tis_cap=2.0)
    loss, stats = policy_objective(lp, old, adv, mask, tis, total_tokens=1, total_rows=1, engine_BT=T([[0.0, -3.0]]))
    assert loss.item() == pytest.approx(-2.0) and stats.is_weight == pytest.approx(2.0)  # weight e^2 capped at 2


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("kind", ["ppo", "gspo"])
def test_micro_batching_does_not_change_the_gradient(mode, kind):
    torch.manual_seed(0)
    vocab, hidden = 11, 6
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, hidden), torch.nn.Linear(hidden, vocab))
    lens = [5, 3, 7, 4, 6, 2, 7, 5]
    ids = torch.randint(0, vocab, (8, 7))
    mask = torch.zeros(8, 7)
    for i, n in enumerate(lens):
        mask[i, 2:n] = 1.0
    adv = torch.randn(8, 1).expand(8, 7).contiguous()
    old = torch.randn(8, 7) * 0.1 - 2.0
    weights = torch.rand(8) + 0.5
    cfg = LossConfig(policy_loss=kind, loss_agg=mode, kl_coef=0.0, agg_norm=16.0)
    totals = dict(total_tokens=mask.sum().item(), total_rows=8.0)

    def grads(chunks):
        model.zero_grad()
        for rows in chunks:
            logits = model(ids[rows])
            logp = torch.zeros(len(rows), 7)
            logp[:, 1:] = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[rows][:, 1:, None]).squeeze(-1)
            loss, _ = policy_objective(logp, old[rows], adv[rows], mask[rows], cfg, weights_B=weights[rows], **totals)
            loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = grads([list(range(8))])
    split = grads([[i] for i in range(8)])
    for a, b in zip(whole, split, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()
