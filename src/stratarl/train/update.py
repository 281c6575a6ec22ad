"""The optimisation step: PPO epochs over mini-batches, each accumulated over micro-batches.

Gradient accumulation is exact: every micro-batch's loss is aggregated with its mini-batch's token
and row totals (`losses.aggregate`), so 1 x 8 and 8 x 1 micro-batches give the same gradient. A
non-finite loss or gradient skips that optimizer step (weights untouched) and is counted; the driver
stops a run after too many in a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..algos.losses import LossConfig, LossStats, policy_objective, value_loss
from ..allocator import relieve_pressure
from ..types import Sample
from .batching import Batch, collate, micro_batches, split_minibatches
from .distributed import DataParallel, all_sum, check_same_rows, grad_sync, norm_value, shard
from .policy import ForwardOut, PolicyStep, device_of, forward


@dataclass
class Critic:
    """A value head on the policy (`model` is None) or on a separate copy of the model."""

    head: nn.Module
    """Linear value head."""
    model: nn.Module | None = None
    """A separate critic backbone, or None to share the policy's."""
    coef: float = 0.5
    """Weight of the value loss."""
    clip: float = 0.2
    """Value clipping range."""
    token_level: bool = False
    """Per-token values (token GAE) instead of one per row (step-GAE)."""

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters()) + (list(self.model.parameters()) if self.model is not None else [])


@dataclass
class UpdateStats:
    """Means over the optimizer steps of one update."""

    policy_loss: float = 0.0
    """Policy loss."""
    value_loss: float = 0.0
    """Critic loss (0 without a critic)."""
    clip_fraction: float = 0.0
    """Fraction of clipped tokens."""
    approx_kl: float = 0.0
    """old − new logprob."""
    kl: float = 0.0
    """KL to the reference."""
    entropy: float = 0.0
    """Policy entropy on trained tokens."""
    is_weight: float = 1.0
    """Truncated importance weight."""
    grad_norm: float = 0.0
    """Global gradient norm before clipping."""
    steps: int = 0
    """Optimizer steps taken."""
    skipped: int = 0
    """Optimizer steps skipped for non-finite loss or gradients."""
    consecutive_skips: int = 0
    """Skips at the end of the update, in a row."""
    engine_trainer_abs: float = 0.0
    """Mean |log π_trainer − log π_engine| over the trained tokens of the first mini-batch's forward
    (0 when the rows carry no engine logprobs)."""
    engine_trainer_max: float = 0.0
    """The largest of those differences."""
    _n: int = field(default=0, repr=False)

    def add(self, pl: float, vl: float, s: LossStats, gn: float) -> None:
        k = self._n
        for name, v in (("policy_loss", pl), ("value_loss", vl), ("clip_fraction", s.clip_fraction),
                        ("approx_kl", s.approx_kl), ("kl", s.kl), ("entropy", s.entropy), ("is_weight", s.is_weight),
                        ("grad_norm", gn)):
            setattr(self, name, (getattr(self, name) * k + v) / (k + 1))
        self._n += 1


@torch.no_grad()
def score(model: nn.Module, samples: list[Sample], pad_id: int, bf16: bool, token_budget: int,
          into: str = "old_logprobs") -> None:
    """Fill `sample.<into>` with the model's logprobs (teacher forcing, no gradient). `model` may be a
    `PolicyStep` (under FSDP2 a sharded model runs only through its root module)."""
    model.eval()
    order = sorted(range(len(samples)), key=lambda i: samples[i].num_tokens)
    for chunk in micro_batches([samples[i] for i in order], token_budget):
        batch = collate(chunk, pad_id)
        out = model(batch, bf16=bf16)[0] if isinstance(model, PolicyStep) else forward(model, batch, bf16=bf16)
        for s, row in zip(chunk, out.logp_BT, strict=True):
            setattr(s, into, row[: s.num_tokens].tolist())
        relieve_pressure()


@dataclass
class Mismatch:
    """Running |log π_trainer − log π_engine| over trained tokens, micro-batch by micro-batch."""

    total: float = 0.0
    tokens: float = 0.0
    largest: float = 0.0

    def add(self, logp_BT: torch.Tensor, engine_BT: torch.Tensor | None, mask_BT: torch.Tensor) -> None:
        if engine_BT is None:
            return
        diff = (logp_BT.detach() - engine_BT).abs() * mask_BT
        self.total += float(diff.sum())
        self.tokens += float(mask_BT.sum())
        self.largest = max(self.largest, float(diff.max()) if diff.numel() else 0.0)

    def into(self, stats: UpdateStats) -> None:
        stats.engine_trainer_abs = self.total / self.tokens if self.tokens else 0.0
        stats.engine_trainer_max = self.largest


def _micro_loss(step: nn.Module, batch: Batch, loss_cfg: LossConfig, totals: dict, bf16: bool,
                critic: Critic | None, want_entropy: bool, mismatch: Mismatch | None = None
                ) -> tuple[torch.Tensor, float, float, LossStats]:
    batch = batch.to(device_of(step))
    out, critic_out = step(batch, entropy=want_entropy, bf16=bf16)
    if mismatch is not None:
        mismatch.add(out.logp_BT, batch.engine_logp_BT, batch.loss_mask_BT)
    old = batch.old_logp_BT if batch.old_logp_BT is not None else out.logp_BT.detach()
    loss, stats = policy_objective(out.logp_BT, old, batch.advantages_BT, batch.loss_mask_BT, loss_cfg,
                                   weights_B=batch.weights_B.to(out.logp_BT.dtype), ref_BT=batch.ref_logp_BT, entropy_BT=out.entropy_BT,
                                   engine_BT=batch.engine_logp_BT, **totals)
    vl = torch.zeros((), device=loss.device)
    if critic is not None:
        vl = _critic_loss(critic, batch, critic_out if critic_out is not None else out, totals)
        loss = loss + critic.coef * vl
    return loss, float(loss.detach()), float(vl.detach()), stats


def _critic_loss(critic: Critic, batch: Batch, out: ForwardOut, totals: dict) -> torch.Tensor:
    if critic.token_level:
        mask = batch.loss_mask_BT
        err = 0.5 * (out.values_BT - batch.returns_BT) ** 2
        return (err * mask).sum() / totals["total_tokens"]
    share = batch.input_ids_BT.shape[0] / totals["total_rows"]  # rows of this micro-batch / mini-batch rows
    return value_loss(out.values_B, batch.returns_B, None, 0.0) * share


def policy_step(model: nn.Module, critic: Critic | None) -> PolicyStep:
    """The policy and its critic as the one module a micro-batch's forward goes through."""
    if critic is None:
        return PolicyStep(model)
    return PolicyStep(model, critic.head, critic.model, critic.token_level)


def _accumulate(step: nn.Module, rows: list[Sample], loss_cfg: LossConfig, totals: dict, *, token_budget: int,
                pad_id: int, bf16: bool, critic: Critic | None, dp: DataParallel | None,
                mismatch: Mismatch | None = None) -> tuple[float, float, LossStats | None]:
    """Backward over this rank's micro-batches of one mini-batch; returns the mini-batch's policy and
    value losses (summed over ranks) and the last micro-batch's stats. Alone, a non-finite loss stops
    the accumulation at once; with `dp` every rank goes on to the gradient all-reduce (distributed.py)."""
    mine = shard(rows, dp)
    # a rank without rows runs one row with zero weight: every rank must join the all-reduce
    weight = (float(dp.world_size) if dp is not None else 1.0) * (1.0 if mine else 0.0)  # DDP averages ranks
    chunks = list(micro_batches(mine or rows[:1], token_budget))
    pl = vl = 0.0
    last: LossStats | None = None
    for i, chunk in enumerate(chunks):
        with grad_sync(dp, i == len(chunks) - 1):
            loss, p_l, v_l, last = _micro_loss(step, collate(chunk, pad_id), loss_cfg, totals, bf16, critic,
                                               loss_cfg.entropy_coef > 0, mismatch)
            if not math.isfinite(p_l) and dp is None:
                return float("nan"), vl, last
            (loss * weight).backward()
        relieve_pressure()  # jemalloc keeps freed activations; past half the memory they go back (allocator.py)
        if mine:
            pl, vl = pl + p_l, vl + v_l
    pl, vl = all_sum(dp, pl, vl)
    return pl, vl, last


def ppo_update(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, samples: list[Sample],
               loss_cfg: LossConfig, *, epochs: int, minibatches: int, token_budget: int, grad_clip: float,
               pad_id: int, bf16: bool, generator: torch.Generator, critic: Critic | None = None,
               params: list[nn.Parameter] | None = None, dp: DataParallel | None = None) -> UpdateStats:
    """PPO epochs over `samples` (old logprobs already filled). With `dp`, every rank passes the same
    `samples` and generator state, trains its share of each mini-batch through `dp.module`, and takes
    the optimizer step the single process would take on all of them (train/distributed.py)."""
    stats = UpdateStats()
    params = params or [p for g in optimizer.param_groups for p in g["params"]]
    check_same_rows(dp, samples)
    step = dp.module if dp is not None and dp.module is not None else policy_step(model, critic)
    model.train()
    mismatch: Mismatch | None = Mismatch()
    for _ in range(epochs):
        for mb in split_minibatches(len(samples), minibatches, generator):
            rows = sorted((samples[i] for i in mb), key=lambda s: s.num_tokens)
            # totals over the whole mini-batch, on every rank: see distributed.py for why not per rank
            totals = {"total_tokens": max(1.0, float(sum(sum(s.loss_mask) for s in rows))),
                      "total_rows": float(sum(1 for s in rows if any(s.loss_mask))) or 1.0}
            optimizer.zero_grad(set_to_none=True)
            pl, vl, last = _accumulate(step, rows, loss_cfg, totals, token_budget=token_budget, pad_id=pad_id,
                                       bf16=bf16, critic=critic, dp=dp, mismatch=mismatch)
            if mismatch is not None:  # measured on the first mini-batch: the weights that sampled it
                mismatch.into(stats)
                mismatch = None
            gn = norm_value(torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf")))
            if not (math.isfinite(pl) and math.isfinite(gn)) or last is None:
                optimizer.zero_grad(set_to_none=True)
                stats.skipped += 1
                stats.consecutive_skips += 1
                continue
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            stats.steps += 1
            stats.consecutive_skips = 0
            stats.add(pl, vl, last, gn)
    model.eval()
    return stats
