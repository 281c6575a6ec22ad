"""IPR-style preference pairs and their training (Xiong et al., *Iterative step-level process refinement*;
STeCa's baseline, seed 003; ALGORITHMS.md, "DPO (IPR)").

Two kinds of pairs, built from an `ExpertScan` (the agent's greedy rollouts from expert prefixes and the
Monte-Carlo step values), tokenized token-exactly from the recorded ids:

- **step**: at step t of an expert trajectory where the expert's MC value beats the agent's,
  r_step(s_t, a^e_t) − r_step(s_t, â_t) > margin (`DeviationConfig.expert_margin`): chosen = the expert's
  action row, rejected = the agent's action row. Both rows share the same prompt ids (the agent's prompt at
  the expert prefix); a pair whose prompts differ is not built.
- **trajectory**: the expert trajectory (chosen, every step row) against the agent's failed greedy
  trajectory from the same task's start (rejected, every step row), when the expert won.

A side's sequence log-prob is Σ over its rows of Σ_t m_t·log π. The objectives (`PAIR_OBJECTIVES`) are
pure functions of per-pair sequence log-probs:

    ipr    mean over pairs of −log σ(β·Δ) + c·NLL(y_c)      (`dpo_loss`; β = 0.1, c = 1)
    steca  mean over pairs of w·[−log σ(β·Δ) + NLL(y_c)]     (`steca_loss`, β = `steca_beta`)

with Δ the DPO margin against a frozen reference, NLL(y_c) = −log π(y_c)/|y_c| (the chosen side's mean
token NLL, as a causal-LM loss on the chosen text; stated choice). The reference is the policy at the
start of each IPR iteration, so its log-probs are computed once, before the iteration's updates.

Gradient accumulation is exact: a mini-batch's pair log-probs are first computed without gradient, the
objective's derivative g = ∂L/∂(log π(side)) is taken per pair and side, and the rows are then
back-propagated micro-batch by micro-batch with the surrogate Σ_rows g·Σ_t m_t·log π (same gradient as L,
whatever the micro-batching).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..algos.losses import PreferenceConfig, dpo_loss, sequence_logp, steca_loss
from ..errors import UserError, lookup
from ..train.batching import collate, micro_batches
from ..train.policy import forward
from ..train.sft import accumulate_gradients
from ..types import Sample, Step, Trajectory
from .deviation import DeviationConfig, expert_beats_agent
from .step_value import ExpertScan

PairKind = Literal["step", "trajectory"]


@dataclass
class PreferencePair:
    """One (chosen, rejected) pair of step rows with the same context."""

    kind: PairKind
    """`step` (one row each side) or `trajectory` (every step row of each side)."""
    uid: str
    """Names the pair (`kind:trajectory uid@t`)."""
    chosen: list[Sample]
    """The expert's rows (prompt ids + response ids, loss on the response)."""
    rejected: list[Sample]
    """The agent's rows, with its sampled ids."""
    chosen_value: float
    """r_step(s_t, a^e_t) (step) or the expert's outcome (trajectory)."""
    rejected_value: float
    """r_step(s_t, â_t) (step) or the agent's outcome (trajectory)."""
    weight: float = 1.0
    """w of the `steca` objective (1 for IPR)."""


def step_row(step: Step, uid: str, index: int) -> Sample | None:
    """The training row of one recorded step: its exact prompt ids + response ids (None without ids)."""
    if not step.prompt_ids or not step.response_ids:
        return None
    n = len(step.prompt_ids)
    return Sample(input_ids=list(step.prompt_ids) + list(step.response_ids),
                  loss_mask=[0] * n + [1] * len(step.response_ids), uid=uid, step_index=index, kind="action")


def step_pairs(scans: list[ExpertScan], dcfg: DeviationConfig) -> list[PreferencePair]:
    """At every checked step where the expert beats the agent by more than the margin in MC value: the
    expert's row against the agent's row at the same prompt."""
    out = []
    for scan in scans:
        for c in scan.comparisons:
            run, value = scan.explored[c.t], scan.agent_values[c.t]
            if not expert_beats_agent(c, dcfg) or run is None or len(run.steps) <= c.t or value is None:
                continue
            uid = f"step:{scan.expert.uid or scan.expert.task.uid}@{c.t}"
            expert, agent = scan.expert.steps[c.t], run.steps[c.t]
            chosen, rejected = step_row(expert, uid, c.t), step_row(agent, uid, c.t)
            if chosen is None or rejected is None or expert.prompt_ids != agent.prompt_ids:
                continue
            out.append(PreferencePair(kind="step", uid=uid, chosen=[chosen], rejected=[rejected],
                                      chosen_value=c.expert_value, rejected_value=c.agent_value))
    return out


def trajectory_rows(traj: Trajectory, uid: str) -> list[Sample]:
    return [r for i, s in enumerate(traj.steps) if (r := step_row(s, uid, i)) is not None]


def trajectory_pairs(scans: list[ExpertScan]) -> list[PreferencePair]:
    """The expert trajectory (won) against the agent's failed greedy trajectory from the task's start."""
    out = []
    for scan in scans:
        run = scan.explored[0] if scan.explored else None
        if run is None or run.won or not scan.expert.won:
            continue
        uid = f"trajectory:{scan.expert.uid or scan.expert.task.uid}"
        chosen, rejected = trajectory_rows(scan.expert, uid), trajectory_rows(run, uid)
        if chosen and rejected:
            out.append(PreferencePair(kind="trajectory", uid=uid, chosen=chosen, rejected=rejected,
                                      chosen_value=scan.expert.outcome, rejected_value=run.outcome))
    return out


def preference_pairs(scans: list[ExpertScan], dcfg: DeviationConfig) -> list[PreferencePair]:
    """Step pairs, then trajectory pairs."""
    return step_pairs(scans, dcfg) + trajectory_pairs(scans)


# -- objectives (pure) -----------------------------------------------------------------------------


PairObjective = Callable[..., torch.Tensor]
"""f(pc_P, pr_P, rc_P, rr_P, n_chosen_P, weights_P, pref) -> loss: sequence log-probs of the chosen and
rejected sides under the policy (pc, pr) and the reference (rc, rr), chosen token counts, pair weights."""


def ipr_objective(pc, pr, rc, rr, n_chosen, weights, pref: PreferenceConfig) -> torch.Tensor:
    """IPR: mean over pairs of −log σ(β·Δ) + c·NLL(y_c), NLL the chosen side's mean token NLL."""
    return dpo_loss(pc, pr, rc, rr, pref.dpo_beta, pref.dpo_nll_coef, chosen_nll_B=-pc / n_chosen)


def steca_pair_objective(pc, pr, rc, rr, n_chosen, weights, pref: PreferenceConfig) -> torch.Tensor:
    """STeCa with β > 0: mean over pairs of w·[−log σ(β·Δ) + NLL(y_c)]."""
    return steca_loss(pc, pr, rc, rr, -pc / n_chosen, weights, pref.steca_beta)


PAIR_OBJECTIVES: dict[str, PairObjective] = {"ipr": ipr_objective, "steca": steca_pair_objective}


# -- training --------------------------------------------------------------------------------------


@torch.no_grad()
def row_logps(model: torch.nn.Module, rows: list[Sample], pad_id: int, micro_batch_tokens: int,
              bf16: bool) -> torch.Tensor:
    """Σ_t m_t·log π per row, in the rows' order. [R]"""
    out = []
    for chunk in micro_batches(rows, micro_batch_tokens):
        b = collate(chunk, pad_id)
        out.append(sequence_logp(forward(model, b, bf16=bf16).logp_BT, b.loss_mask_BT))
    return torch.cat(out) if out else torch.zeros(0)


def pair_logps(model: torch.nn.Module, pairs: list[PreferencePair], pad_id: int, micro_batch_tokens: int,
               bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of the chosen and the rejected side of every pair. ([P], [P])"""
    rows = [r for p in pairs for r in p.chosen + p.rejected]
    per_row = row_logps(model, rows, pad_id, micro_batch_tokens, bf16).tolist()
    chosen, rejected, i = [], [], 0
    for p in pairs:
        chosen.append(sum(per_row[i:i + len(p.chosen)]))
        i += len(p.chosen)
        rejected.append(sum(per_row[i:i + len(p.rejected)]))
        i += len(p.rejected)
    return torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)


def pair_gradients(model: torch.nn.Module, pairs: list[PreferencePair], ref: tuple[torch.Tensor, torch.Tensor],
                   objective: PairObjective, pref: PreferenceConfig, pad_id: int, micro_batch_tokens: int,
                   bf16: bool) -> float:
    """Zero the gradients, then accumulate ∇L of one mini-batch of pairs (see the module docstring);
    returns L. `ref` holds the reference's (chosen, rejected) sequence log-probs of these pairs."""
    pc, pr = (x.requires_grad_() for x in pair_logps(model, pairs, pad_id, micro_batch_tokens, bf16))
    n_chosen = torch.tensor([float(sum(sum(r.loss_mask) for r in p.chosen)) for p in pairs], dtype=torch.float64)
    weights = torch.tensor([p.weight for p in pairs], dtype=torch.float64)
    loss = objective(pc, pr, ref[0], ref[1], n_chosen.clamp(min=1), weights, pref)
    gc, gr = torch.autograd.grad(loss, [pc, pr])
    rows = [Sample(input_ids=r.input_ids, loss_mask=r.loss_mask, weight=float(g), uid=r.uid)
            for p, a, b in zip(pairs, gc.tolist(), gr.tolist(), strict=True)
            for r, g in [(r, a) for r in p.chosen] + [(r, b) for r in p.rejected]]
    accumulate_gradients(model, rows, micro_batch_tokens, pad_id, bf16, loss=_surrogate)
    return float(loss.detach())


def _surrogate(batch: list[Sample]) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Σ_rows g·Σ_t m_t·log π, g (the row's `weight`) = ∂L/∂log π(its side): its gradient is ∇L."""
    return lambda logp_BT, mask_BT, g_B: (g_B * sequence_logp(logp_BT, mask_BT)).sum()


@dataclass
class PairStats:
    """What one pass of preference training did."""

    pairs: int
    """Pairs trained on."""
    steps: int
    """Optimizer steps."""
    first_loss: float
    """Mean loss of the first optimizer steps."""
    last_loss: float
    """Mean loss of the last optimizer steps."""
    seconds: float
    """Wall time."""


def train_pairs(model: torch.nn.Module, pairs: list[PreferencePair], objective: str, pref: PreferenceConfig,
                opt_cfg: Any, pad_id: int, steps: int, bf16: bool, seed: int = 0, progress: Any = None) -> PairStats:
    """`steps` AdamW steps over mini-batches of `opt_cfg.batch_pairs` pairs (seeded shuffles, cycling), the
    reference being the policy now (frozen: its log-probs are computed once, here)."""
    if not pairs:
        raise UserError("no preference pairs: the expert never beat the agent by the margin and the agent's greedy "
                        "rollouts never failed where the expert won; try more tasks or deviation.expert_margin=0")
    fn = lookup("pair objective", objective, PAIR_OBJECTIVES)
    t0, mbt = time.time(), opt_cfg.micro_batch_tokens
    model.eval()
    ref_c, ref_r = pair_logps(model, pairs, pad_id, mbt, bf16)
    opt = torch.optim.AdamW(model.parameters(), lr=opt_cfg.lr, weight_decay=0.0)
    order, losses = cycled(len(pairs), steps * opt_cfg.batch_pairs, seed), []
    task = progress.add_task("IPR/DPO", total=steps, status="") if progress else None
    model.train()
    for k in range(steps):
        idx = order[k * opt_cfg.batch_pairs:(k + 1) * opt_cfg.batch_pairs]
        losses.append(pair_gradients(model, [pairs[i] for i in idx], (ref_c[idx], ref_r[idx]), fn, pref, pad_id, mbt,
                                     bf16))
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg.grad_clip)
        opt.step()
        if progress:
            progress.update(task, advance=1, status=f"loss {losses[-1]:.3f}")
    model.eval()
    k = max(1, min(10, len(losses) // 5))
    return PairStats(pairs=len(pairs), steps=len(losses), first_loss=sum(losses[:k]) / k,
                     last_loss=sum(losses[-k:]) / k, seconds=time.time() - t0)


def cycled(n: int, total: int, seed: int) -> list[int]:
    """`total` indices from seeded permutations of range(n), one after another."""
    rng, out = random.Random(seed), []
    while len(out) < total:
        perm = list(range(n))
        rng.shuffle(perm)
        out += perm
    return out[:total]
