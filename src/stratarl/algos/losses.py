"""Policy, supervised and preference losses: pure tensor functions (ALGORITHMS.md, Policy losses).

Shapes are in the names: `_BT` per token (rows x tokens), `_B` per row. Position t of a `_BT` tensor
is token t of the row; `mask_BT` is 1 on trained tokens. Per-token losses are reduced by
`aggregate`, which takes the *mini-batch* totals so that summing its result over the micro-batches
of a mini-batch equals the result on the whole mini-batch: gradient accumulation stays exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import lookup

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


@dataclass
class LossConfig:
    """Policy loss, aggregation, KL, entropy and importance correction."""

    policy_loss: Literal["ppo", "gspo"] = "ppo"
    """`ppo` (token ratios) or `gspo` (one sequence-level ratio per row, i.e. per step)."""
    clip_low: float = 0.2
    """ε_low: ratios below 1 − ε_low are clipped."""
    clip_high: float = 0.2
    """ε_high: ratios above 1 + ε_high are clipped (0.28 is DAPO's clip-higher)."""
    dual_clip: float = 3.0
    """c of the dual clip for negative advantages (0 disables it)."""
    logratio_clamp: float = 20.0
    """The log-ratio is clamped to ±this before exp."""
    loss_agg: AggMode = "token-mean"
    """How per-token losses become one number (see `aggregate`)."""
    agg_norm: float = 1024.0
    """The constant divisor of `seq-mean-token-sum-norm` (Dr.GRPO's maximum length)."""
    kl_coef: float = 0.001
    """β of the KL to the reference policy; 0 disables the reference model entirely."""
    kl_kind: Literal["k1", "k2", "k3"] = "k3"
    """KL estimator: k1 = logp − ref, k2 = ½(logp − ref)², k3 (low_var_kl) = e^(ref−logp) − (ref−logp) − 1."""
    kl_clamp: float = 10.0
    """The KL estimate is clamped to ±this."""
    kl_in_reward: bool = False
    """Put −β·KL into the step rewards instead of the loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (off by default)."""
    importance_correction: bool = True
    """Truncated importance weights for engine/trainer logprob mismatch (when the engine's differ)."""
    tis_cap: float = 2.0
    """Cap of the truncated importance weight."""


@dataclass
class LossStats:
    """What one policy-loss evaluation saw (token means over trained tokens)."""

    clip_fraction: float
    """Fraction of tokens whose ratio was clipped."""
    approx_kl: float
    """Mean of old − new logprob (how far the update moved the policy)."""
    kl: float
    """Mean KL estimate to the reference (0 without one)."""
    entropy: float
    """Mean entropy (0 when not computed)."""
    is_weight: float
    """Mean truncated importance weight (1 when off)."""


def _ratio(logp: torch.Tensor, old: torch.Tensor, clamp: float) -> torch.Tensor:
    return torch.exp((logp - old).clamp(-clamp, clamp))


def ppo_clip_loss(logp_BT: torch.Tensor, old_BT: torch.Tensor, adv_BT: torch.Tensor, clip_low: float = 0.2,
                  clip_high: float = 0.2, dual_clip: float = 3.0, clamp: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """ℓ = −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A); for A < 0 also ℓ = min(ℓ, −cA). Returns the per-token
    loss and where the clip was active."""
    ratio = _ratio(logp_BT, old_BT, clamp)
    unclipped = -ratio * adv_BT
    clipped = -ratio.clamp(1 - clip_low, 1 + clip_high) * adv_BT
    loss = torch.maximum(unclipped, clipped)
    if dual_clip > 0:
        loss = torch.where(adv_BT < 0, torch.minimum(loss, -dual_clip * adv_BT), loss)
    return loss, (clipped > unclipped)


def gspo_loss(logp_BT: torch.Tensor, old_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor,
              clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float = 0.0,
              clamp: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """GSPO / step-level ratio: s = exp(mean_t m·(logp − old)) per row, clipped like PPO with the row's
    advantage; the row loss is written on each of its trained tokens (aggregate per row, then rows)."""
    n = mask_BT.sum(-1).clamp(min=1)
    log_s = ((logp_BT - old_BT) * mask_BT).sum(-1) / n
    adv_B = (adv_BT * mask_BT).sum(-1) / n
    s = torch.exp(log_s.clamp(-clamp, clamp))
    unclipped, clipped = -s * adv_B, -s.clamp(1 - clip_low, 1 + clip_high) * adv_B
    loss_B = torch.maximum(unclipped, clipped)
    if dual_clip > 0:
        loss_B = torch.where(adv_B < 0, torch.minimum(loss_B, -dual_clip * adv_B), loss_B)
    return loss_B[:, None].expand_as(mask_BT), (clipped > unclipped)[:, None].expand_as(mask_BT)


def aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, mode: AggMode = "token-mean", *,
              total_tokens: float | None = None, total_rows: float | None = None, norm: float = 1024.0) -> torch.Tensor:
    """Reduce per-token losses. With the mini-batch's totals passed in, the results of its
    micro-batches add up to the mini-batch's:
    token-mean Σmℓ / N_tokens; seq-mean-token-mean Σ_rows(Σ_t mℓ / Σ_t m) / N_rows;
    seq-mean-token-sum Σmℓ / N_rows; seq-mean-token-sum-norm Σmℓ / (norm · N_rows)."""
    masked = loss_BT * mask_BT
    rows_with_tokens = (mask_BT.sum(-1) > 0).sum()
    n_rows = total_rows if total_rows is not None else rows_with_tokens.clamp(min=1)
    if mode == "token-mean":
        n_tok = total_tokens if total_tokens is not None else mask_BT.sum().clamp(min=1)
        return masked.sum() / n_tok
    if mode == "seq-mean-token-mean":
        per_row = masked.sum(-1) / mask_BT.sum(-1).clamp(min=1)
        return per_row.sum() / n_rows
    if mode == "seq-mean-token-sum":
        return masked.sum() / n_rows
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (norm * n_rows)
    raise ValueError(f"unknown loss aggregation '{mode}'")


def kl_penalty(logp_BT: torch.Tensor, ref_BT: torch.Tensor, kind: str = "k3", clamp: float = 10.0) -> torch.Tensor:
    """Per-token KL estimate to the reference policy, clamped to ±clamp."""
    d = logp_BT - ref_BT
    if kind == "k1":
        kl = d
    elif kind == "k2":
        kl = 0.5 * d * d
    elif kind == "k3":
        kl = torch.exp(-d) + d - 1
    else:
        raise ValueError(f"unknown KL estimator '{kind}'")
    return kl.clamp(-clamp, clamp)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def truncated_is_weights(trainer_logp_BT: torch.Tensor, engine_logp_BT: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """min(π_trainer / π_engine, cap) per token, without gradient: corrects for sampling with an
    engine whose numerics differ from the trainer's (e.g. bf16 engine, fp32 trainer)."""
    return torch.exp(trainer_logp_BT - engine_logp_BT).clamp(max=cap).detach()


PolicyLoss = Callable[..., tuple[torch.Tensor, torch.Tensor]]
POLICY_LOSSES: dict[str, PolicyLoss] = {
    "ppo": lambda logp, old, adv, mask, c: ppo_clip_loss(logp, old, adv, c.clip_low, c.clip_high, c.dual_clip,
                                                         c.logratio_clamp),
    "gspo": lambda logp, old, adv, mask, c: gspo_loss(logp, old, adv, mask, c.clip_low, c.clip_high, 0.0,
                                                      c.logratio_clamp),
}


def policy_objective(logp_BT: torch.Tensor, old_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor,
                     cfg: LossConfig, *, total_tokens: float, total_rows: float, weights_B: torch.Tensor | None = None,
                     ref_BT: torch.Tensor | None = None, entropy_BT: torch.Tensor | None = None,
                     engine_BT: torch.Tensor | None = None) -> tuple[torch.Tensor, LossStats]:
    """The whole policy loss of a micro-batch: clipped surrogate (x truncated IS weight) + β·KL −
    entropy bonus, row weights applied, aggregated with the mini-batch totals."""
    loss_BT, clipped_BT = lookup("policy loss", cfg.policy_loss, POLICY_LOSSES)(logp_BT, old_BT, adv_BT, mask_BT, cfg)
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
    loss = aggregate(loss_BT, mask_BT, cfg.loss_agg, total_tokens=total_tokens, total_rows=total_rows, norm=cfg.agg_norm)
    return loss, _stats(mask_BT, clipped_BT, logp_BT, old_BT, kl_BT, entropy_BT, is_w)


def _stats(mask, clipped, logp, old, kl, ent, is_w) -> LossStats:
    n = mask.sum().clamp(min=1)

    def mean(x: torch.Tensor | None, default: float) -> float:
        return default if x is None else float((x.detach() * mask).sum() / n)

    return LossStats(clip_fraction=mean(clipped.float(), 0.0), approx_kl=mean(old - logp, 0.0), kl=mean(kl, 0.0),
                     entropy=mean(ent, 0.0), is_weight=mean(is_w, 1.0))


# -- supervised and preference losses ---------------------------------------------------------------


def sft_loss(logp_BT: torch.Tensor, mask_BT: torch.Tensor, weights_B: torch.Tensor | None = None,
             mode: AggMode = "token-mean", *, total_tokens: float | None = None,
             total_rows: float | None = None) -> torch.Tensor:
    """Weighted NLL. Observation masking is the caller's choice of `mask_BT`: model tokens only
    (AutoCoA stage 2, `mask_observations=True`) or observations too (stage 3, an implicit world model)."""
    nll = -logp_BT
    if weights_B is not None:
        nll = nll * weights_B[:, None]
    return aggregate(nll, mask_BT, mode, total_tokens=total_tokens, total_rows=total_rows)


def sequence_logp(logp_BT: torch.Tensor, mask_BT: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """Σ_t m·logp per row, or its mean over the row's tokens (P(x|c) of AutoCoA)."""
    total = (logp_BT * mask_BT).sum(-1)
    return total / mask_BT.sum(-1).clamp(min=1) if mean else total


def contrastive_when_to_act_loss(p_chosen_B: torch.Tensor, p_rejected_B: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """AutoCoA stage 1: L = −log σ(P_ch − P_rej) + α·(−P_ch), with P the length-normalised logprob."""
    return (-F.logsigmoid(p_chosen_B - p_rejected_B) - alpha * p_chosen_B).mean()


def dpo_loss(pc_B: torch.Tensor, pr_B: torch.Tensor, rc_B: torch.Tensor, rr_B: torch.Tensor, beta: float = 0.1,
             nll_coef: float = 0.0, chosen_nll_B: torch.Tensor | None = None) -> torch.Tensor:
    """−log σ(β[(π_c − ref_c) − (π_r − ref_r)]) (+ nll_coef · NLL of the chosen side), over pairs
    of sequence logprobs; IPR trains with nll_coef = 1."""
    loss = -F.logsigmoid(beta * ((pc_B - rc_B) - (pr_B - rr_B)))
    if nll_coef and chosen_nll_B is not None:
        loss = loss + nll_coef * chosen_nll_B
    return loss.mean()


def steca_loss(pc_B: torch.Tensor, pr_B: torch.Tensor, rc_B: torch.Tensor, rr_B: torch.Tensor,
               chosen_nll_B: torch.Tensor, weights_B: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """STeCa: L = w·[−log σ(β·Δ) − log π(y_c)]; β = 0 drops the preference term entirely, which is
    the released code's weighted NLL."""
    loss = chosen_nll_B
    if beta > 0:
        loss = loss - F.logsigmoid(beta * ((pc_B - rc_B) - (pr_B - rr_B)))
    return (weights_B * loss).mean()


STECA_EXPLORED_MAX_NDTW = 0.013


def steca_weight(kind: Literal["calibrated", "expert", "explored"], ndtw: float) -> float:
    """w = 1 + 0.01·nDTW for calibrated (D_c) and expert sub-trajectory (D_s) data, 1 − 0.01·nDTW for
    explored successes (D_e)."""
    return 1 - 0.01 * ndtw if kind == "explored" else 1 + 0.01 * ndtw


def keep_explored(ndtw: float) -> bool:
    """D_e keeps an explored success only when its nDTW to the expert is below 0.013."""
    return ndtw < STECA_EXPLORED_MAX_NDTW


def value_loss(values_B: torch.Tensor, returns_B: torch.Tensor, old_values_B: torch.Tensor | None = None,
               clip: float = 0.2) -> torch.Tensor:
    """½·max((V − G)², (V_old + clip(V − V_old, ±c) − G)²), mean over rows (unclipped without V_old)."""
    err = (values_B - returns_B) ** 2
    if old_values_B is not None and clip > 0:
        clipped = old_values_B + (values_B - old_values_B).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - returns_B) ** 2)
    return 0.5 * err.mean()
