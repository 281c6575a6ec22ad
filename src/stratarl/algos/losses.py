"""Policy, supervised and preference losses: pure tensor functions (ALGORITHMS.md, Policy losses).

Shapes are in the names: `_BT` per token (rows x tokens), `_B` per row, `_BTV` per token and vocabulary
entry. `mask_BT` is 1 on trained tokens. Per-token losses become one number through `aggregate`, which
takes the *mini-batch* totals: summing its results over the micro-batches of a mini-batch gives the
result on the whole mini-batch, so gradient accumulation is exact for every aggregation mode.
docs/algorithms.md lists each formula as implemented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import lookup

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
KLKind = Literal["k1", "k2", "k3", "low_var_kl"]


@dataclass
class LossConfig:
    """Policy loss, aggregation, KL, entropy and importance correction."""

    policy_loss: Literal["ppo", "gspo"] = "ppo"
    """`ppo` (a ratio per token) or `gspo` (one sequence-level ratio per row, i.e. per step)."""
    clip_low: float = 0.2
    """ε_low: the ratio is clipped below at 1 − ε_low."""
    clip_high: float = 0.2
    """ε_high: the ratio is clipped above at 1 + ε_high (0.28 is DAPO's clip-higher)."""
    dual_clip: float = 3.0
    """c of the dual clip for negative advantages, ℓ = min(ℓ, −c·A) (0 disables it)."""
    logratio_clamp: float = 20.0
    """The log-ratio is clamped to ±this before exp."""
    loss_agg: AggMode = "token-mean"
    """How per-token losses become one number (see `aggregate`); GSPO's paper uses seq-mean-token-mean."""
    agg_norm: float = 1024.0
    """The constant divisor of `seq-mean-token-sum-norm` (Dr.GRPO: the maximum response length)."""
    kl_coef: float = 0.001
    """β of the KL to the reference policy; 0 disables the reference model entirely."""
    kl_kind: KLKind = "k3"
    """k1 = logp − ref; k2 = ½(logp − ref)²; k3 = low_var_kl = e^(ref−logp) − (ref−logp) − 1."""
    kl_clamp: float = 10.0
    """The per-token KL estimate is clamped to ±this."""
    kl_in_reward: bool = False
    """Put −β·KL into the rewards instead of the loss: `policy_objective` leaves it out of the loss,
    `kl_reward_shaping` gives the per-token reward term."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (0: off)."""
    importance_correction: bool = True
    """Multiply the loss by truncated importance weights min(π_trainer/π_engine, cap) when the engine's
    logprobs are given (they differ from the trainer's)."""
    tis_cap: float = 2.0
    """Cap of the truncated importance weight."""
    negative_scale: float = 1.0
    """Negative advantages are multiplied by this before the loss (1: the plain estimator; 0: only
    better-than-baseline steps are pushed up, the failures only lower the baseline). See `scale_negatives`."""


@dataclass
class PreferenceConfig:
    """Contrastive (AutoCoA), DPO (IPR) and STeCa objectives."""

    contrastive_alpha: float = 0.2
    """α of the contrastive when-to-act loss (weight of −P(chosen))."""
    dpo_beta: float = 0.1
    """β of DPO."""
    dpo_nll_coef: float = 1.0
    """Weight of the NLL on the chosen side added to DPO (IPR: 1; 0 gives plain DPO)."""
    steca_beta: float = 0.0
    """β of STeCa's preference term; 0 (the released code) leaves the weighted NLL."""
    steca_weight_scale: float = 0.01
    """w = 1 ± scale·nDTW."""
    steca_explored_max_ndtw: float = 0.013
    """Explored successes (D_e) are kept only when their nDTW is below this."""


@dataclass
class LossStats:
    """What one policy-loss evaluation saw (means over trained tokens)."""

    clip_fraction: float
    """Fraction of tokens whose ratio was clipped (the clipped term was the larger loss)."""
    approx_kl: float
    """Mean of old − new logprob (k1: how far the update moved the policy)."""
    kl: float
    """Mean KL estimate to the reference (0 without one)."""
    entropy: float
    """Mean entropy (0 when not computed)."""
    is_weight: float
    """Mean truncated importance weight (1 when off)."""


# -- policy losses ---------------------------------------------------------------------------------


def _clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float,
                       dual_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ = max(−ρA, −clip(ρ, 1−ε_low, 1+ε_high)A); where A < 0 and c > 0, ℓ = min(ℓ, −cA)."""
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1 - clip_low, 1 + clip_high) * adv
    loss = torch.maximum(unclipped, clipped)
    if dual_clip > 0:
        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)
    return loss, clipped > unclipped


def ppo_clip_loss(logp_BT: torch.Tensor, old_BT: torch.Tensor, adv_BT: torch.Tensor, clip_low: float = 0.2,
                  clip_high: float = 0.2, dual_clip: float = 3.0, clamp: float = 20.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip per token: ρ = exp(clamp(logp − old, ±clamp)),
    ℓ = −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A), and for A < 0 the dual clip ℓ = min(ℓ, −cA).
    Returns (ℓ_BT, clipped_BT)."""
    ratio = torch.exp((logp_BT - old_BT).clamp(-clamp, clamp))
    return _clipped_surrogate(ratio, adv_BT, clip_low, clip_high, dual_clip)


def gspo_loss(logp_BT: torch.Tensor, old_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor,
              clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float = 0.0, clamp: float = 20.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO / per-step ratio: s = exp(Σ_t m(logp − old) / Σ_t m) per row, clipped like PPO with the row's
    advantage (mean of A over its trained tokens). The row's loss is written on each of its tokens, so
    `seq-mean-token-mean` averages per row then over rows (GSPO); token-mean weighs rows by length."""
    n_B = mask_BT.sum(-1).clamp(min=1)
    log_s_B = ((logp_BT - old_BT) * mask_BT).sum(-1) / n_B
    adv_B = (adv_BT * mask_BT).sum(-1) / n_B
    s_B = torch.exp(log_s_B.clamp(-clamp, clamp))
    loss_B, clipped_B = _clipped_surrogate(s_B, adv_B, clip_low, clip_high, dual_clip)
    return loss_B[:, None].expand_as(mask_BT), clipped_B[:, None].expand_as(mask_BT)


def _ppo(logp_BT, old_BT, adv_BT, mask_BT, cfg: LossConfig):
    return ppo_clip_loss(logp_BT, old_BT, adv_BT, cfg.clip_low, cfg.clip_high, cfg.dual_clip, cfg.logratio_clamp)


def _gspo(logp_BT, old_BT, adv_BT, mask_BT, cfg: LossConfig):
    return gspo_loss(logp_BT, old_BT, adv_BT, mask_BT, cfg.clip_low, cfg.clip_high, cfg.dual_clip,
                     cfg.logratio_clamp)


PolicyLoss = Callable[..., tuple[torch.Tensor, torch.Tensor]]
POLICY_LOSSES: dict[str, PolicyLoss] = {"ppo": _ppo, "gspo": _gspo}
"""name -> f(logp_BT, old_BT, adv_BT, mask_BT, cfg) -> (loss_BT, clipped_BT)."""


# -- aggregation -----------------------------------------------------------------------------------


def aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mode: AggMode = "token-mean", *,
              total_tokens: float | None = None, total_rows: float | None = None,
              norm_constant: float = 1024.0) -> torch.Tensor:
    """One number from per-token losses ℓ, trained tokens m:
    token-mean Σ mℓ / N_tokens; seq-mean-token-mean Σ_rows (Σ_t mℓ / Σ_t m) / N_rows;
    seq-mean-token-sum Σ mℓ / N_rows; seq-mean-token-sum-norm Σ mℓ / (norm_constant · N_rows).
    Pass the *mini-batch's* N_tokens / N_rows when this is one micro-batch of it: the micro-batch results
    then add up to the mini-batch's. Without them, this batch's own counts are used (rows with at least
    one trained token). All-masked input gives 0, never NaN (masked positions are zeroed, not multiplied,
    so a non-finite value there cannot leak in)."""
    masked = torch.where(mask_BT > 0, loss_BT * mask_BT, torch.zeros_like(loss_BT))
    tokens_B = mask_BT.sum(-1)
    n_rows = total_rows if total_rows is not None else (tokens_B > 0).sum().clamp(min=1)
    if mode == "token-mean":
        return masked.sum() / (total_tokens if total_tokens is not None else mask_BT.sum().clamp(min=1))
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / tokens_B.clamp(min=1)).sum() / n_rows
    if mode == "seq-mean-token-sum":
        return masked.sum() / n_rows
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (norm_constant * n_rows)
    raise ValueError(f"unknown loss aggregation '{mode}'; use one of {list(AggMode.__args__)}")


# -- KL, entropy, importance weights ---------------------------------------------------------------


def _k1(d: torch.Tensor) -> torch.Tensor:
    return d


def _k2(d: torch.Tensor) -> torch.Tensor:
    return 0.5 * d * d


def _k3(d: torch.Tensor) -> torch.Tensor:
    # clamp before exp so that a huge log-ratio cannot make inf (and a NaN gradient through the clamp)
    d = d.clamp(-20.0, 20.0)
    return torch.exp(-d) + d - 1


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3,
                                                                    "low_var_kl": _k3}
"""name -> per-token estimate from d = logp − ref."""


def kl_penalty(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, kind: str = "k3", clamp: float = 10.0
               ) -> torch.Tensor:
    """Per-token KL(π ‖ π_ref) estimate from d = logp − ref, clamped to ±clamp:
    k1 = d; k2 = ½d²; k3 (`low_var_kl`) = e^(−d) + d − 1 (d clamped to ±20 inside the exp)."""
    return lookup("KL estimator", kind, KL_ESTIMATORS)(logp_BT - ref_logp_BT).clamp(-clamp, clamp)


def kl_reward_shaping(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor, mask_BT: torch.Tensor, coef: float,
                      kind: str = "k1", clamp: float = 10.0) -> torch.Tensor:
    """KL in the reward: the per-token reward −β·KL_t·m_t (no gradient). Sum it over a row for the
    step's reward (step-level estimators: add β·Σ_t KL_t to a copy of the step's penalty with
    `advantages.with_step_penalties`), or add it per token (token-level GAE)."""
    return (-coef * kl_penalty(logp_BT, ref_logp_BT, kind, clamp) * mask_BT).detach()


def entropy_from_logits(logits_BTV: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p_v log p_v over the last axis, in fp32."""
    logp = torch.log_softmax(logits_BTV.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def truncated_is_weights(trainer_logp_BT: torch.Tensor, engine_logp_BT: torch.Tensor, cap: float = 2.0
                         ) -> torch.Tensor:
    """min(π_trainer / π_engine, cap) per token, without gradient: corrects for sampling with an engine
    whose numerics differ from the trainer's (e.g. a bf16 engine and an fp32 trainer)."""
    return torch.exp((trainer_logp_BT - engine_logp_BT).clamp(max=20.0)).clamp(max=cap).detach()


# -- the whole policy objective --------------------------------------------------------------------


def scale_negatives(adv_BT: torch.Tensor, scale: float) -> torch.Tensor:
    """A ← A for A ≥ 0, s·A for A < 0. With a small model most sampled steps fail and carry A < 0;
    pushing their tokens down moves probability to every other token, garbage included, while the
    positive steps say which tokens to move it to (docs/algorithms.md, an addition to ALGORITHMS.md)."""
    if scale == 1.0:
        return adv_BT
    return torch.where(adv_BT < 0, adv_BT * scale, adv_BT)


def policy_objective(logp_BT: torch.Tensor, old_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor,
                     cfg: LossConfig, *, total_tokens: float, total_rows: float,
                     weights_B: torch.Tensor | None = None, ref_BT: torch.Tensor | None = None,
                     entropy_BT: torch.Tensor | None = None, engine_BT: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, LossStats]:
    """The policy loss of one micro-batch: per token ℓ·w_IS + β·KL − c_H·H, times the row weight,
    aggregated by `cfg.loss_agg` with the mini-batch totals. w_IS = min(π_old/π_engine, cap) when
    `importance_correction` and `engine_BT` is given; KL only when `ref_BT` is given, β > 0 and not
    `kl_in_reward`; entropy only when `entropy_BT` is given and c_H > 0."""
    adv_BT = scale_negatives(adv_BT, cfg.negative_scale)
    loss_BT, clipped_BT = lookup("policy loss", cfg.policy_loss, POLICY_LOSSES)(logp_BT, old_BT, adv_BT,
                                                                                mask_BT, cfg)
    is_w = None
    if cfg.importance_correction and engine_BT is not None and cfg.tis_cap > 0:
        is_w = truncated_is_weights(old_BT, engine_BT, cfg.tis_cap)
        loss_BT = loss_BT * is_w
    kl_BT = kl_penalty(logp_BT, ref_BT, cfg.kl_kind, cfg.kl_clamp) if ref_BT is not None else None
    if kl_BT is not None and cfg.kl_coef > 0 and not cfg.kl_in_reward:
        loss_BT = loss_BT + cfg.kl_coef * kl_BT
    if entropy_BT is not None and cfg.entropy_coef > 0:
        loss_BT = loss_BT - cfg.entropy_coef * entropy_BT
    if weights_B is not None:
        loss_BT = loss_BT * weights_B[:, None]
    loss = aggregate(loss_BT, mask_BT, cfg.loss_agg, total_tokens=total_tokens, total_rows=total_rows,
                     norm_constant=cfg.agg_norm)
    return loss, _stats(mask_BT, clipped_BT, logp_BT, old_BT, kl_BT, entropy_BT, is_w)


def _stats(mask, clipped, logp, old, kl, ent, is_w) -> LossStats:
    n = mask.sum().clamp(min=1)

    def mean(x: torch.Tensor | None, default: float) -> float:
        return default if x is None else float(torch.where(mask > 0, x.detach(), 0.0).sum() / n)

    return LossStats(clip_fraction=mean(clipped.float(), 0.0), approx_kl=mean(old - logp, 0.0),
                     kl=mean(kl, 0.0), entropy=mean(ent, 0.0), is_weight=mean(is_w, 1.0))


# -- supervised and preference losses --------------------------------------------------------------


def sft_loss(logp_BT: torch.Tensor, mask_BT: torch.Tensor, weights_B: torch.Tensor | None = None,
             mode: AggMode = "token-mean", *, total_tokens: float | None = None,
             total_rows: float | None = None) -> torch.Tensor:
    """Weighted NLL: aggregate(−w_b·logp, m). Observation masking is the caller's choice of `mask_BT`:
    model tokens only (AutoCoA stage 2, `mask_observations=True`) or observations too (stage 3, an
    implicit world model). The sample weight w_b multiplies row b's loss."""
    nll_BT = -logp_BT if weights_B is None else -logp_BT * weights_B[:, None]
    return aggregate(nll_BT, mask_BT, mode, total_tokens=total_tokens, total_rows=total_rows)


def sequence_logp(logp_BT: torch.Tensor, mask_BT: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """Σ_t m·logp per row, or the mean over the row's trained tokens (AutoCoA's P(x|c))."""
    total_B = (logp_BT * mask_BT).sum(-1)
    return total_B / mask_BT.sum(-1).clamp(min=1) if mean else total_B


def contrastive_when_to_act_loss(p_chosen_B: torch.Tensor, p_rejected_B: torch.Tensor, alpha: float = 0.2
                                 ) -> torch.Tensor:
    """AutoCoA stage 1: mean over pairs of −log σ(P_ch − P_rej) + α·(−P_ch), P the length-normalised
    logprob (`sequence_logp(..., mean=True)`)."""
    return (-F.logsigmoid(p_chosen_B - p_rejected_B) - alpha * p_chosen_B).mean()


def dpo_margin(pc_B: torch.Tensor, pr_B: torch.Tensor, rc_B: torch.Tensor, rr_B: torch.Tensor) -> torch.Tensor:
    """Δ = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r)), from sequence logprobs."""
    return (pc_B - rc_B) - (pr_B - rr_B)


def dpo_loss(pc_B: torch.Tensor, pr_B: torch.Tensor, rc_B: torch.Tensor, rr_B: torch.Tensor, beta: float = 0.1,
             nll_coef: float = 0.0, chosen_nll_B: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pairs of −log σ(β·Δ) + nll_coef·NLL(y_c). IPR trains with nll_coef = 1
    (`PreferenceConfig.dpo_nll_coef`); the NLL of the chosen side is the caller's (e.g. `sft_loss` per row)."""
    loss_B = -F.logsigmoid(beta * dpo_margin(pc_B, pr_B, rc_B, rr_B))
    if nll_coef:
        if chosen_nll_B is None:
            raise ValueError("dpo_loss: nll_coef > 0 needs chosen_nll_B (the NLL of the chosen responses)")
        loss_B = loss_B + nll_coef * chosen_nll_B
    return loss_B.mean()


def steca_loss(pc_B: torch.Tensor, pr_B: torch.Tensor, rc_B: torch.Tensor, rr_B: torch.Tensor,
               chosen_nll_B: torch.Tensor, weights_B: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """STeCa: mean over rows of w·[−log σ(β·Δ) + NLL(y_c)]. β = 0 drops the preference term entirely
    (not log 2): the released code's weighted NLL; the preference logprobs are then unused."""
    loss_B = chosen_nll_B
    if beta > 0:
        loss_B = loss_B - F.logsigmoid(beta * dpo_margin(pc_B, pr_B, rc_B, rr_B))
    return (weights_B * loss_B).mean()


def steca_sft_loss(logp_BT: torch.Tensor, mask_BT: torch.Tensor, weights_B: torch.Tensor, *,
                   total_samples: float) -> torch.Tensor:
    """STeCa's weighted objective at β = 0 on step rows: L = (1/S) Σ_s w_s·(−log π(y_s)), where the S samples
    (D_c, D_s, D_e trajectories) are cut into step rows b that all carry their sample's weight, so
    −log π(y_s) = Σ_{b∈s} Σ_t m_bt·(−logp_bt): sequence log-probs summed, not averaged, then a mean over
    samples, as in the released code. Pass the mini-batch's S: micro-batch results then add up."""
    return sft_loss(logp_BT, mask_BT, weights_B, "seq-mean-token-sum", total_rows=total_samples)


def steca_weight(kind: Literal["calibrated", "expert", "explored"], ndtw: float, scale: float = 0.01) -> float:
    """w = 1 + scale·nDTW for calibrated (D_c) and expert sub-trajectory (D_s) samples, 1 − scale·nDTW for
    explored successes (D_e)."""
    return 1 - scale * ndtw if kind == "explored" else 1 + scale * ndtw


def keep_explored(ndtw: float, max_ndtw: float = 0.013) -> bool:
    """D_e keeps an explored success only when its nDTW to the expert is below `max_ndtw`."""
    return ndtw < max_ndtw


def value_loss(values: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor | None = None,
               clip: float = 0.2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Critic loss ½·max((V − G)², (V_old + clip(V − V_old, ±c) − G)²) (unclipped without V_old or with
    c = 0), averaged over rows (`_B` inputs) or over the masked tokens (`_BT` inputs with `mask`)."""
    err = (values - returns) ** 2
    if old_values is not None and clip > 0:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns) ** 2)
    if mask is None:
        return 0.5 * err.mean()
    return 0.5 * torch.where(mask > 0, err, 0.0).sum() / mask.sum().clamp(min=1)
