"""Everything a training run holds between iterations, how it is built, saved and restored."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..algos.advantages import NEEDS_VALUES
from ..config import save_config, to_dict
from ..engines import Engine, make_engine
from ..envs.pool import EnvPool
from ..envs.registry import make_tasks
from ..models import load_model, load_tokenizer, resolve_model
from ..rollout.diversity import DiverseSelector, make_embedder
from ..rollout.groups import StrategySelector, first_n
from ..rollout.horizon import Horizon
from ..types import Group, from_dict
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import TaskSampler
from .logging import RunLogger
from .policy import bf16_supported, make_value_head
from .update import Critic


@dataclass
class TrainState:
    """A run in progress."""

    cfg: TrainConfig
    """The resolved config."""
    run_dir: Path
    """`<out_dir>/<name>`."""
    model: nn.Module
    """The policy being trained (fp32 master weights)."""
    tokenizer: Any
    """Its tokenizer."""
    engine: Engine
    """The rollout engine (its own copy of the weights, synced after each update)."""
    pool: EnvPool
    """Env workers."""
    optimizer: torch.optim.Optimizer
    """AdamW over the policy (and critic) parameters."""
    scheduler: Any
    """Learning-rate schedule."""
    sampler: TaskSampler
    """Seeded task order."""
    horizon: Horizon
    """Horizon schedule."""
    logger: RunLogger
    """Metrics sinks."""
    generator: torch.Generator
    """Mini-batch shuffling."""
    bf16: bool
    """bf16 autocast in the trainer."""
    critic: Critic | None = None
    """Critic, for value-based estimators."""
    ref_model: nn.Module | None = None
    """Frozen reference policy, when the KL coefficient is positive."""
    selector: StrategySelector = first_n
    """How N strategies are picked from the σ·N candidates."""
    iteration: int = 0
    """The next iteration to run."""
    buffer: list[Group] = field(default_factory=list)
    """Dynamic-sampling surplus groups."""
    bad_updates: int = 0
    """Consecutive skipped optimizer steps."""
    context: int = 2048
    """Model context length."""
    descriptions: dict[str, str] = field(default_factory=dict)
    """Task descriptions seen this iteration (task uid -> text), for the judge."""

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def _critic(cfg: TrainConfig, model: nn.Module) -> Critic | None:
    kind = cfg.critic.kind
    needs = NEEDS_VALUES.get(cfg.algo.estimator)
    if kind == "auto":
        kind = "head" if needs else "none"
    if kind == "none":
        return None
    backbone = copy.deepcopy(model) if kind == "separate" else None
    return Critic(head=make_value_head(model, cfg.seed), model=backbone, coef=cfg.critic.coef, clip=cfg.critic.clip,
                  token_level=needs == "token")


def _optimizer(cfg: TrainConfig, model: nn.Module, critic: Critic | None) -> tuple[torch.optim.Optimizer, Any]:
    o = cfg.optim
    groups = [{"params": list(model.parameters()), "lr": o.lr}]
    if critic is not None:
        groups.append({"params": critic.parameters(), "lr": cfg.critic.lr})
    opt = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
    total = max(1, cfg.iterations * o.epochs * o.minibatches)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        frac = min(1.0, step / total)
        decay = {"constant": 1.0, "linear": 1.0 - frac, "cosine": 0.5 * (1 + math.cos(math.pi * frac))}[o.schedule]
        return warm * max(decay, 0.0)

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _selector(cfg: TrainConfig, model: nn.Module, tokenizer: Any) -> StrategySelector:
    if not cfg.rollout.group.strategy or cfg.rollout.group.candidates <= 1:
        return first_n
    d = cfg.strategy.diversity
    return DiverseSelector(make_embedder(d.embedder, model, tokenizer), d.first)


def build_state(cfg: TrainConfig, model_path: Path | None = None, resume: dict | None = None) -> TrainState:
    """A fresh run from `model_path` (default: the configured model), or a resumed one."""
    run_dir = Path(cfg.out_dir) / cfg.name
    path = Path(model_path) if model_path else resolve_model(cfg.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    critic = _critic(cfg, model)
    optimizer, scheduler = _optimizer(cfg, model, critic)
    tasks = make_tasks(cfg.env.id, cfg.env.train_split, n=cfg.env.train_tasks or None)
    state = TrainState(
        cfg=cfg, run_dir=run_dir, model=model, tokenizer=tokenizer,
        engine=make_engine(path, cfg.engine, tokenizer),
        pool=EnvPool(num_workers=cfg.env.workers, step_timeout=cfg.env.step_timeout),
        optimizer=optimizer, scheduler=scheduler, sampler=TaskSampler(tasks, cfg.seed),
        horizon=Horizon(cfg.rollout.horizon),
        logger=RunLogger(run_dir, cfg.logging.tensorboard, cfg.logging.wandb, config=to_dict(cfg),
                         resume_at=resume["iteration"] if resume else None),
        generator=torch.Generator().manual_seed(cfg.seed),
        bf16=cfg.optim.bf16 == "on" or (cfg.optim.bf16 == "auto" and bf16_supported()),
        critic=critic, ref_model=copy.deepcopy(model).eval() if cfg.algo.loss.kl_coef > 0 else None,
        selector=_selector(cfg, model, tokenizer), context=int(model.config.max_position_embeddings),
    )
    if resume:
        restore(state, resume)
    else:
        torch.manual_seed(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return state


def snapshot(state: TrainState) -> dict[str, Any]:
    """Everything besides the model weights that an exact resume needs."""
    c = state.critic
    return {
        "iteration": state.iteration, "sampler_position": state.sampler.position, "horizon_stage": state.horizon.stage,
        "buffer": [to_dict(g) for g in state.buffer], "bad_updates": state.bad_updates,
        "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
        "generator": state.generator.get_state(), "rng": ckpt.rng_state(),
        "critic_head": c.head.state_dict() if c else None,
        "critic_model": c.model.state_dict() if c and c.model is not None else None,
        "ref_model": state.ref_model.state_dict() if state.ref_model is not None else None,
    }


def restore(state: TrainState, snap: dict[str, Any]) -> None:
    state.iteration = snap["iteration"]
    state.sampler.position = snap["sampler_position"]
    state.horizon.stage = snap["horizon_stage"]
    state.buffer = [from_dict(Group, g) for g in snap["buffer"]]
    state.bad_updates = snap["bad_updates"]
    state.optimizer.load_state_dict(snap["optimizer"])
    state.scheduler.load_state_dict(snap["scheduler"])
    state.generator.set_state(snap["generator"])
    ckpt.set_rng_state(snap["rng"])
    if state.critic is not None and snap["critic_head"] is not None:
        state.critic.head.load_state_dict(snap["critic_head"])
        if state.critic.model is not None and snap["critic_model"] is not None:
            state.critic.model.load_state_dict(snap["critic_model"])
    if state.ref_model is not None and snap["ref_model"] is not None:
        state.ref_model.load_state_dict(snap["ref_model"])


def save(state: TrainState, name: str) -> Path:
    return ckpt.save_checkpoint(state.run_dir, name, state.model, state.tokenizer, snapshot(state),
                                keep=state.cfg.checkpoint.keep)


def close(state: TrainState) -> None:
    state.pool.close()
    state.engine.close()
    state.logger.close()
