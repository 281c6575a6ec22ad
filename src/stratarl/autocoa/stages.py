"""The five AutoCoA stages, each a plain function `(ctx) -> metrics`, picked by name from `STAGES`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..algos.advantages import normalize
from ..algos.losses import LossConfig, contrastive_when_to_act_loss, sequence_logp
from ..envs.registry import make_tasks
from ..train.batching import collate
from ..train.policy import forward
from ..train.sft import SFTConfig, train_rows
from ..train.update import ppo_update, score
from ..types import Sample, Task
from .config import AutoCoAConfig, RLSection
from .data import GoldEpisode, Pair, gold_episodes, sft_row, when_to_act_pairs
from .simulate import CoAEpisode, Observer, RealObserver, SimulatedObserver, run_episodes


@dataclass
class StageContext:
    """What every stage works on: the policy, its tokenizer, the rollout engine and the gold data."""

    cfg: AutoCoAConfig
    """The run's config."""
    model: Any
    """The policy being trained (in place)."""
    tokenizer: Any
    """Its tokenizer."""
    engine: Any = None
    """The rollout engine (weights synced from `model` before every use)."""
    gold: list[GoldEpisode] = field(default_factory=list)
    """Gold episodes (built on first use)."""
    progress: Any = None
    """A rich progress display, or None."""

    def gold_data(self) -> list[GoldEpisode]:
        if not self.gold:
            g = self.cfg.gold
            self.gold = gold_episodes(self.cfg.env, g.split, g.tasks, g.start)
        return self.gold

    def synced_engine(self) -> Any:
        self.engine.update_weights(self.model.state_dict())
        return self.engine


# -- SFT stage 1: contrastive when-to-act --------------------------------------------------------------


def _pair_rows(pairs: list[Pair]) -> list[Sample]:
    """Chosen rows, then rejected rows: context + continuation, loss mask on the continuation."""
    def row(p: Pair, cont: list[int]) -> Sample:
        return Sample(input_ids=p.context_ids + cont, loss_mask=[0] * len(p.context_ids) + [1] * len(cont), kind="sft")
    return [row(p, p.chosen_ids) for p in pairs] + [row(p, p.rejected_ids) for p in pairs]


def contrastive_step(model: Any, opt: torch.optim.Optimizer, pairs: list[Pair], alpha: float, pad_id: int,
                     grad_clip: float, bf16: bool = False) -> tuple[float, float]:
    """One optimizer step on a batch of pairs; returns (loss, fraction of pairs with P_ch > P_rej)."""
    batch = collate(_pair_rows(pairs), pad_id)
    out = forward(model, batch, bf16=bf16)
    p_B = sequence_logp(out.logp_BT, batch.loss_mask_BT, mean=True)  # P(x|c): mean token logprob
    n = len(pairs)
    loss = contrastive_when_to_act_loss(p_B[:n], p_B[n:], alpha)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.detach()), float((p_B[:n] > p_B[n:]).float().mean())


def sft1(ctx: StageContext) -> dict[str, float]:
    """Contrastive when-to-act pairs from the gold episodes (`data.when_to_act_pairs`)."""
    s = ctx.cfg.sft
    pairs = [p for ep in ctx.gold_data() for p in when_to_act_pairs(ctx.tokenizer, ep)]
    opt = torch.optim.AdamW(ctx.model.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(ctx.cfg.seed)
    losses, wins = [], []
    steps = s.sft1_epochs * math.ceil(len(pairs) / s.batch_rows)
    bar = ctx.progress.add_task("sft1 (contrastive)", total=steps, status="") if ctx.progress else None
    ctx.model.train()
    for _ in range(s.sft1_epochs):
        order = torch.randperm(len(pairs), generator=gen).tolist()
        for lo in range(0, len(pairs), s.batch_rows):
            loss, win = contrastive_step(ctx.model, opt, [pairs[i] for i in order[lo:lo + s.batch_rows]], s.alpha,
                                         ctx.tokenizer.pad_token_id, s.grad_clip)
            losses.append(loss)
            wins.append(win)
            if bar is not None:
                ctx.progress.update(bar, advance=1, status=f"loss {loss:.3f}")
    ctx.model.eval()
    k = max(1, len(losses) // 5)
    return {"pairs": len(pairs), "acting_pairs": sum(p.chosen_acts for p in pairs), "steps": len(losses),
            "first_loss": sum(losses[:k]) / k, "last_loss": sum(losses[-k:]) / k,
            "last_pair_accuracy": sum(wins[-k:]) / k}


# -- SFT stages 2 and 3 ------------------------------------------------------------------------------


def _sft(ctx: StageContext, mask_observations: bool, epochs: int) -> dict[str, float]:
    s = ctx.cfg.sft
    rows = [sft_row(ctx.tokenizer, ep, mask_observations) for ep in ctx.gold_data()]
    scfg = SFTConfig(seed=ctx.cfg.seed, epochs=epochs, lr=s.lr, warmup_steps=s.warmup_steps, batch_rows=s.batch_rows,
                     micro_batch_tokens=s.micro_batch_tokens, grad_clip=s.grad_clip, bf16=ctx.cfg.bf16)
    stats = train_rows(ctx.model, rows, scfg, ctx.tokenizer.pad_token_id, ctx.progress)
    return {"rows": stats.rows, "trained_tokens": stats.tokens, "steps": stats.steps,
            "first_loss": stats.first_loss, "last_loss": stats.last_loss}


def sft2(ctx: StageContext) -> dict[str, float]:
    """CoT+CoA SFT with observation tokens masked: the policy learns how to act."""
    return _sft(ctx, True, ctx.cfg.sft.sft2_epochs)


def sft3(ctx: StageContext) -> dict[str, float]:
    """The same data with observations trained too: an implicit world model (what RL stage 1 samples from)."""
    return _sft(ctx, False, ctx.cfg.sft.sft3_epochs)


# -- RL stages ----------------------------------------------------------------------------------------


def episode_rows(groups: list[list[CoAEpisode]], eps: float = 1e-6) -> list[Sample]:
    """One row per episode: prompt + reply ids exactly as sampled, loss on model turns only (observations,
    real or simulated, are masked), advantage = GRPO-normalised reward within the question's group.
    Rows with zero advantage carry no gradient and are left out."""
    rows = []
    for group in groups:
        advs = normalize([e.reward for e in group], eps)
        for e, a in zip(group, advs, strict=True):
            if a != 0.0:
                rows.append(Sample(input_ids=e.prompt_ids + e.response_ids(), loss_mask=[0] * len(e.prompt_ids) + e.loss_mask(),
                                   advantage=a, uid=e.task.uid, kind="action"))
    return rows


def grpo_update(model: Any, opt: torch.optim.Optimizer, rows: list[Sample], loss_cfg: LossConfig, r: RLSection,
                pad_id: int, gen: torch.Generator) -> Any:
    """Behaviour logprobs from the trainer (the first ratio is exactly 1), then PPO-clip epochs."""
    score(model, rows, pad_id, False, r.micro_batch_tokens, "old_logprobs")
    return ppo_update(model, opt, None, rows, loss_cfg, epochs=r.epochs, minibatches=1, token_budget=r.micro_batch_tokens,
                      grad_clip=r.grad_clip, pad_id=pad_id, bf16=False, generator=gen)


def _train_tasks(ctx: StageContext) -> list[Task]:
    r = ctx.cfg.rl
    return make_tasks(ctx.cfg.env, "train", n=r.train_tasks or None)


def rl_loop(ctx: StageContext, iterations: int, observer_for: Callable[[Any], Observer], label: str,
            seed_offset: int = 0) -> dict[str, float]:
    """GRPO iterations: rollouts (one group of `group_size` per question), rows, PPO update, weight sync."""
    cfg, r = ctx.cfg, ctx.cfg.rl
    tasks = _train_tasks(ctx)
    opt = torch.optim.AdamW(ctx.model.parameters(), lr=r.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_cfg = LossConfig(clip_low=r.clip, clip_high=r.clip, kl_coef=0.0)
    rewards, searches, trained_rows, t0 = [], [], 0, time.time()
    bar = ctx.progress.add_task(label, total=iterations, status="") if ctx.progress else None
    for it in range(iterations):
        lo = it * r.tasks_per_iteration
        batch = [tasks[(lo + i) % len(tasks)] for i in range(r.tasks_per_iteration)]
        engine = ctx.synced_engine()
        eps = run_episodes(engine, ctx.tokenizer, [t for t in batch for _ in range(r.group_size)], cfg.rollout,
                           observer_for(engine), seed=cfg.seed * 7919 + seed_offset + it)
        groups = [eps[i:i + r.group_size] for i in range(0, len(eps), r.group_size)]
        rows = episode_rows(groups)
        trained_rows += len(rows)
        rewards.append(sum(e.reward for e in eps) / len(eps))
        searches.append(sum(e.searches for e in eps) / len(eps))
        if rows:
            grpo_update(ctx.model, opt, rows, loss_cfg, r, ctx.tokenizer.pad_token_id, gen)
        if bar is not None:
            ctx.progress.update(bar, advance=1, status=f"reward {rewards[-1]:.2f} searches {searches[-1]:.1f}")
    k = max(1, iterations // 3)
    return {"iterations": iterations, "episodes": iterations * r.tasks_per_iteration * r.group_size,
            "first_reward": sum(rewards[:k]) / k, "last_reward": sum(rewards[-k:]) / k,
            "mean_searches": sum(searches) / max(1, len(searches)), "trained_rows": trained_rows,
            "seconds": time.time() - t0}


def rl_sim(ctx: StageContext) -> dict[str, float]:
    """RL stage 1: the policy writes every observation itself (masked from the loss)."""
    return rl_loop(ctx, ctx.cfg.rl.sim_iterations, lambda eng: SimulatedObserver(eng, ctx.tokenizer, ctx.cfg.rollout),
                   "rl_sim")


def rl_real(ctx: StageContext) -> dict[str, float]:
    """RL stage 2: the same loop with the real BM25 search env as the observer."""
    return rl_loop(ctx, ctx.cfg.rl.real_iterations, lambda eng: RealObserver(ctx.cfg.env, ctx.tokenizer), "rl_real",
                   seed_offset=10**6)


STAGES: dict[str, Callable[[StageContext], dict[str, float]]] = {
    "sft1": sft1, "sft2": sft2, "sft3": sft3, "rl_sim": rl_sim, "rl_real": rl_real}
