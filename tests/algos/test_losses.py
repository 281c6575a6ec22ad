"""Losses against numbers worked out by hand, and micro-batching that leaves gradients unchanged."""

import math

import pytest
import torch

from stratarl.algos.losses import (
    LossConfig,
    PreferenceConfig,
    aggregate,
    contrastive_when_to_act_loss,
    dpo_loss,
    entropy_from_logits,
    gspo_loss,
    keep_explored,
    kl_penalty,
    kl_reward_shaping,
    policy_objective,
    ppo_clip_loss,
    scale_negatives,
    sequence_logp,
    sft_loss,
    steca_loss,
    steca_weight,
    truncated_is_weights,
    value_loss,
)
from stratarl.config import describe
from stratarl.errors import UnknownNameError

T = torch.tensor
SP = math.log1p(math.exp(-0.1))  # -log σ(.1) = log(1 + e^-.1) = .644397


def _one(ratio, adv, **kw):
    loss, clipped = ppo_clip_loss(T([[math.log(ratio)]]), T([[0.0]]), T([[adv]]), **kw)
    return loss.item(), bool(clipped.item())


# -- policy losses ---------------------------------------------------------------------------------


def test_ppo_clip_cases():
    assert _one(1.0, 1.0) == (pytest.approx(-1.0), False)    # inside the clip: -ρA
    assert _one(1.1, -1.0) == (pytest.approx(1.1), False)    # inside, A < 0: -ρA = 1.1
    assert _one(1.5, 1.0) == (pytest.approx(-1.2), True)     # A > 0, above: -min(1.5, 1.2)
    assert _one(1.5, -1.0) == (pytest.approx(1.5), False)    # A < 0, above: max(1.5, 1.2) (no clip)
    assert _one(0.5, 1.0) == (pytest.approx(-0.5), False)    # A > 0, below: max(-.5, -.8)
    assert _one(0.5, -1.0) == (pytest.approx(0.8), True)     # A < 0, below: max(.5, .8)
    assert _one(5.0, -1.0) == (pytest.approx(3.0), False)    # max(5, 1.2) = 5, dual clip: min(5, 3·1) = 3
    assert _one(5.0, -2.0) == (pytest.approx(6.0), False)    # max(10, 2.4) = 10 -> min(10, 3·2) = 6
    assert _one(5.0, -1.0, dual_clip=0.0) == (pytest.approx(5.0), False)
    assert _one(5.0, 1.0) == (pytest.approx(-1.2), True)     # dual clip never touches A > 0
    huge, _ = ppo_clip_loss(T([[1000.0]]), T([[0.0]]), T([[-1.0]]), dual_clip=0.0)
    assert huge.item() == pytest.approx(math.exp(20))        # log-ratio clamped at 20 before exp


def test_clip_higher_is_asymmetric():
    # ε_high = .28: ratio 1.25 survives above (it would be clipped at 1.2 with ε_high = .2)
    assert _one(1.25, 1.0, clip_high=0.28)[0] == pytest.approx(-1.25)
    assert _one(1.25, 1.0)[0] == pytest.approx(-1.2)
    assert _one(1.35, 1.0, clip_high=0.28)[0] == pytest.approx(-1.28)
    # the low side stays at 1 - .2: ratio .7 with A < 0 is clipped to .8 either way
    assert _one(0.7, -1.0, clip_high=0.28)[0] == pytest.approx(0.8)
    assert _one(0.7, 1.0)[0] == pytest.approx(-0.7)  # the low clip only bites for A < 0


def test_gspo_sequence_ratio():
    # log-ratios [log 2, 0] on the 2 trained tokens -> mean log 2 / 2 -> s = √2 = 1.414 > 1.2 -> -1.2 on each
    loss, clipped = gspo_loss(T([[math.log(2), 0.0, 9.0]]), T([[0.0, 0.0, 0.0]]), T([[1.0, 1.0, 1.0]]),
                              T([[1.0, 1.0, 0.0]]))
    assert loss[0, :2].tolist() == pytest.approx([-1.2, -1.2]) and bool(clipped[0, 0])
    loss, _ = gspo_loss(T([[math.log(1.1)]]), T([[0.0]]), T([[2.0]]), T([[1.0]]))
    assert loss.item() == pytest.approx(-2.2)  # s = 1.1 inside the clip: -1.1 · 2
    # two rows: seq-mean-token-mean averages per row then over rows: (-1.2 + -2.2) / 2
    lp, old = T([[math.log(2), 0.0], [math.log(1.1), 0.0]]), torch.zeros(2, 2)
    adv, mask = T([[1.0, 1.0], [2.0, 0.0]]), T([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = gspo_loss(lp, old, adv, mask)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(-1.7)
    # dual clip on a row: s = 5, A = -1 -> max(5, 1.2) = 5 -> min(5, 3) = 3
    dual, _ = gspo_loss(T([[math.log(5)]]), T([[0.0]]), T([[-1.0]]), T([[1.0]]), dual_clip=3.0)
    assert dual.item() == pytest.approx(3.0)


def test_aggregations_by_hand():
    loss, mask = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(7 / 3)          # (1+2+4)/3
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(2.75)  # (1.5 + 4)/2
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx(3.5)    # (3 + 4)/2
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm_constant=10).item() == pytest.approx(0.35)  # 7/20
    assert aggregate(loss, mask, "token-mean", total_tokens=7).item() == pytest.approx(1.0)
    # one micro-batch (row 0) of that mini-batch, with the mini-batch totals (3 tokens, 2 rows)
    assert aggregate(loss[:1], mask[:1], "token-mean", total_tokens=3).item() == pytest.approx(1.0)  # 3/3
    assert aggregate(loss[:1], mask[:1], "seq-mean-token-mean", total_rows=2).item() == pytest.approx(0.75)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        assert aggregate(loss, torch.zeros(2, 3), mode).item() == 0.0  # all masked: 0, not NaN
    # a non-finite value on a masked position does not leak into the result
    assert aggregate(T([[1.0, float("inf")], [float("nan"), 3.0]]), T([[1.0, 0.0], [0.0, 1.0]])).item() == 2.0
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(loss, mask, "token-sum")


# -- KL, entropy, importance weights ---------------------------------------------------------------


def test_kl_estimators_and_clamps():
    lp, ref = T([-1.0]), T([-2.0])  # d = logp - ref = 1
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5)             # ½ · 1²
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(math.exp(-1))    # e^-1 + 1 - 1
    assert kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(math.exp(-1))
    assert kl_penalty(T([-2.0]), T([-1.0]), "k3").item() == pytest.approx(math.e - 2)  # d = -1: e - 1 - 1
    assert kl_penalty(T([30.0]), T([0.0]), "k1").item() == 10.0
    assert kl_penalty(T([0.0]), T([30.0]), "k1").item() == -10.0
    assert kl_penalty(T([0.0]), T([30.0]), "k3").item() == 10.0
    # a huge log-ratio gives a clamped value and a finite (zero) gradient, not NaN
    x = T([-200.0, -1.0], requires_grad=True)
    kl_penalty(x, T([0.0, -2.0]), "k3").sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[1].item() == pytest.approx(1 - math.exp(-1))  # d/dd (e^-d + d)
    with pytest.raises(UnknownNameError, match="'k3'"):
        kl_penalty(lp, ref, "k33")


def test_kl_in_reward():
    # token rewards -β · k1 · m: β = .5, d = [1, 2, 3], last token masked -> [-.5, -1, 0]
    r = kl_reward_shaping(T([[0.0, 0.0, 0.0]]), T([[-1.0, -2.0, -3.0]]), T([[1.0, 1.0, 0.0]]), 0.5, "k1")
    assert r.tolist() == [pytest.approx([-0.5, -1.0, 0.0])] and not r.requires_grad


def test_entropy_of_uniform_is_log_v():
    assert entropy_from_logits(torch.zeros(2, 3, 8)).flatten().tolist() == pytest.approx([math.log(8)] * 6)
    assert entropy_from_logits(T([[0.0, -1000.0]])).item() == pytest.approx(0.0, abs=1e-6)  # one-hot


def test_truncated_is_weights():
    # π_trainer / π_engine = e^1 -> capped at 2; e^-1 passes; no gradient
    w = truncated_is_weights(T([-1.0, -2.0], requires_grad=True), T([-2.0, -1.0]), cap=2.0)
    assert w.tolist() == pytest.approx([2.0, math.exp(-1)]) and not w.requires_grad
    assert truncated_is_weights(T([-1.0]), T([-1.5]), cap=1.5).item() == pytest.approx(1.5)  # e^.5 = 1.65


def test_policy_objective_parts():
    lp, old, adv, mask = T([[0.0, -1.0]]), T([[0.0, -1.0]]), T([[1.0, 1.0]]), T([[0.0, 1.0]])
    cfg = LossConfig(kl_coef=0.5, kl_kind="k1", entropy_coef=0.1, importance_correction=False)
    loss, stats = policy_objective(lp, old, adv, mask, cfg, total_tokens=1, total_rows=1, ref_BT=T([[0.0, -2.0]]),
                                   entropy_BT=T([[0.0, 2.0]]))
    # trained token: -1 (ratio 1, A 1) + .5 · (k1 = 1) - .1 · 2 = -.7
    assert loss.item() == pytest.approx(-0.7) and stats.kl == pytest.approx(1.0) and stats.entropy == pytest.approx(2.0)
    in_reward = LossConfig(kl_coef=0.5, kl_kind="k1", kl_in_reward=True, importance_correction=False)
    loss, stats = policy_objective(lp, old, adv, mask, in_reward, total_tokens=1, total_rows=1, ref_BT=T([[0.0, -2.0]]))
    assert loss.item() == pytest.approx(-1.0) and stats.kl == pytest.approx(1.0)  # KL logged, not in the loss
    tis = LossConfig(kl_coef=0.0, tis_cap=2.0)
    loss, stats = policy_objective(lp, old, adv, mask, tis, total_tokens=1, total_rows=1, engine_BT=T([[0.0, -3.0]]))
    assert loss.item() == pytest.approx(-2.0) and stats.is_weight == pytest.approx(2.0)  # e^2 capped at 2
    # row weights, and the clip fraction: ratio e^.5 = 1.65 on the trained token, A > 0 -> clipped
    loss, stats = policy_objective(T([[0.0, -0.5]]), old, adv, mask, LossConfig(), total_tokens=1, total_rows=1,
                                   weights_B=T([0.5]))
    assert loss.item() == pytest.approx(-0.6) and stats.clip_fraction == 1.0  # .5 · -1.2
    assert stats.approx_kl == pytest.approx(-0.5)  # old - new = -1 - (-.5)


def test_negative_advantages_scaled():
    assert scale_negatives(T([[2.0, -1.0, 0.0, -4.0]]), 0.25).tolist() == [[2.0, -0.25, 0.0, -1.0]]
    # ratio 1 on both tokens, token-mean over 2: plain (-1 + 2) / 2 = .5; scaled by .25: (-1 + .5) / 2 = -.25
    lp, adv, mask = T([[0.0, 0.0]]), T([[1.0, -2.0]]), T([[1.0, 1.0]])
    for scale, expected in ((1.0, 0.5), (0.25, -0.25), (0.0, -0.5)):
        cfg = LossConfig(kl_coef=0.0, negative_scale=scale)
        loss, _ = policy_objective(lp, lp, adv, mask, cfg, total_tokens=2, total_rows=1)
        assert loss.item() == pytest.approx(expected)


# -- supervised and preference losses --------------------------------------------------------------


def test_sft_masks_and_weights():
    logp, mask = T([[-1.0, -2.0], [-3.0, -4.0]]), torch.ones(2, 2)
    assert sft_loss(logp, mask).item() == pytest.approx(2.5)  # (1+2+3+4)/4
    assert sft_loss(logp, mask, T([1.0, 2.0])).item() == pytest.approx(17 / 4)  # (1+2 + 2·(3+4))/4
    # observation masking is the mask: only token (0,1) is a model token here
    assert sft_loss(logp, T([[0.0, 1.0], [0.0, 0.0]])).item() == pytest.approx(2.0)
    assert sft_loss(logp, mask, T([1.0, 0.0]), "seq-mean-token-mean").item() == pytest.approx(0.75)  # (1.5+0)/2


def test_contrastive_when_to_act():
    # P = length-normalised logprob: chosen [-1, -1] -> -1; rejected [-2, -2, -2] -> -2
    p_ch = sequence_logp(T([[-1.0, -1.0, 0.0]]), T([[1.0, 1.0, 0.0]]), mean=True)
    p_rej = sequence_logp(T([[-2.0, -2.0, -2.0]]), torch.ones(1, 3), mean=True)
    assert (p_ch.item(), p_rej.item()) == (-1.0, -2.0)
    # -log σ(-1 + 2) + .2 · 1 = log(1 + e^-1) + .2 = .313262 + .2
    assert contrastive_when_to_act_loss(p_ch, p_rej).item() == pytest.approx(math.log1p(math.exp(-1)) + 0.2)
    assert contrastive_when_to_act_loss(p_ch, p_rej, alpha=0.0).item() == pytest.approx(math.log1p(math.exp(-1)))


def test_dpo_and_steca():
    # Δ = (pc - rc) - (pr - rr) = (-1 + 1.5) - (-2 + 1.5) = 1; β .1 -> -log σ(.1) = .644397
    pc, pr, rc, rr = T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5])
    assert dpo_loss(pc, pr, rc, rr, beta=0.1).item() == pytest.approx(SP)
    assert dpo_loss(pc, pr, rc, rr, 0.1, 1.0, T([0.5])).item() == pytest.approx(SP + 0.5)  # + NLL of chosen
    with pytest.raises(ValueError, match="chosen_nll_B"):
        dpo_loss(pc, pr, rc, rr, 0.1, 1.0)
    # STeCa with β = 0 is the weighted NLL: mean(1.1 · 2, .9 · 4) = (2.2 + 3.6)/2 = 2.9
    nll, w = T([2.0, 4.0]), T([1.1, 0.9])
    assert steca_loss(pc.repeat(2), pr.repeat(2), rc.repeat(2), rr.repeat(2), nll, w, beta=0.0).item() == pytest.approx(2.9)
    assert steca_loss(pc, pr, rc, rr, T([2.0]), T([1.0]), beta=0.1).item() == pytest.approx(2.0 + SP)
    assert steca_loss(pc, pr, rc, rr, T([2.0]), T([2.0]), beta=0.1).item() == pytest.approx(2 * (2.0 + SP))


def test_steca_weights():
    assert steca_weight("calibrated", 0.5) == pytest.approx(1.005) and steca_weight("expert", 0.5) == pytest.approx(1.005)
    assert steca_weight("explored", 0.5) == pytest.approx(0.995)  # 1 - .01 · .5
    assert steca_weight("explored", 0.5, scale=0.1) == pytest.approx(0.95)
    assert keep_explored(0.012) and not keep_explored(0.013)


def test_value_loss_clipping():
    # V=[1,2], G=0, V_old=.5: unclipped [1,4]; clipped V = .7 -> .49 both; max -> [1,4]; ½ · mean = 1.25
    assert value_loss(T([1.0, 2.0]), T([0.0, 0.0]), T([0.5, 0.5])).item() == pytest.approx(1.25)
    # V=0, V_old=.5, G=1: unclipped 1; clipped V = .3 -> .49; max 1 -> .5
    assert value_loss(T([0.0]), T([1.0]), T([0.5])).item() == pytest.approx(0.5)
    # V = 1.5, V_old = .5, G = 1: unclipped .25; clipped V = .7 -> .09; max .25 -> .125; clipping can only raise
    assert value_loss(T([1.5]), T([1.0]), T([0.5])).item() == pytest.approx(0.125)
    assert value_loss(T([0.6]), T([1.0])).item() == pytest.approx(0.08)  # ½ · .16
    # per token: errors [.16, 1, (masked)] -> ½ · 1.16 / 2 = .29
    assert value_loss(T([[0.6, 0.0, 9.0]]), T([[1.0, 1.0, 0.0]]), mask=T([[1.0, 1.0, 0.0]])).item() == pytest.approx(0.29)


def test_configs_are_documented_with_the_reference_defaults():
    for cls in (LossConfig, PreferenceConfig):
        rows = describe(cls)
        assert all(doc for _, _, _, doc in rows), [k for k, _, _, d in rows if not d]
    d = {k: v for k, _, v, _ in describe(LossConfig)}
    assert (d["clip_low"], d["clip_high"], d["dual_clip"], d["logratio_clamp"]) == (0.2, 0.2, 3.0, 20.0)
    assert (d["loss_agg"], d["kl_kind"], d["kl_clamp"], d["kl_coef"], d["tis_cap"]) == ("token-mean", "k3", 10.0, 0.001, 2.0)
    p = PreferenceConfig()
    assert (p.contrastive_alpha, p.dpo_beta, p.steca_beta, p.steca_explored_max_ndtw) == (0.2, 0.1, 0.0, 0.013)


# -- invariance ------------------------------------------------------------------------------------

MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["ppo", "gspo"])
def test_micro_batching_does_not_change_the_gradient(mode, kind):
    """One micro-batch of 8 rows and 8 micro-batches of 1 row give the same gradient (fp32, 1e-6),
    with KL, entropy, truncated IS and row weights all on."""
    torch.manual_seed(0)
    vocab, hidden, width = 11, 6, 7
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, hidden), torch.nn.Linear(hidden, vocab))
    ids = torch.randint(0, vocab, (8, width))
    mask = torch.zeros(8, width)
    for i, n in enumerate([5, 3, 7, 4, 6, 2, 7, 2]):
        mask[i, 2:n] = 1.0
    mask[7] = 0.0  # one row with no trained token at all
    adv = torch.randn(8, 1).expand(8, width).contiguous()
    old, ref, engine = (torch.randn(8, width) * 0.1 - 2.0 for _ in range(3))
    weights = torch.rand(8) + 0.5
    cfg = LossConfig(policy_loss=kind, loss_agg=mode, kl_coef=0.1, entropy_coef=0.01, agg_norm=16.0)
    totals = {"total_tokens": mask.sum().item(), "total_rows": 8.0}

    def grads(chunks):
        model.zero_grad()
        for rows in chunks:
            logits = model(ids[rows])
            logp = torch.zeros(len(rows), width)
            logp[:, 1:] = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[rows][:, 1:, None]).squeeze(-1)
            ent = torch.zeros(len(rows), width)
            ent[:, 1:] = entropy_from_logits(logits[:, :-1])
            loss, _ = policy_objective(logp, old[rows], adv[rows], mask[rows], cfg, weights_B=weights[rows],
                                       ref_BT=ref[rows], entropy_BT=ent, engine_BT=engine[rows], **totals)
            loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = grads([list(range(8))])
    split = grads([[i] for i in range(8)])
    assert any(g.abs().sum() > 0 for g in whole)
    for a, b in zip(whole, split, strict=True):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()
