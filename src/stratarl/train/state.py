"""Everything a training run holds between iterations, how it is built, saved and restored."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..agent.experience import ExperienceLibrary, initial_library
from ..agent.format import format_of
from ..algos.advantages import NEEDS_VALUES
from ..config import save_config, to_dict
from ..engines import Engine, make_engine
from ..envs.pool import EnvPool
from ..envs.ray_pool import RayEngine, RayEnvPool, connect
from ..envs.registry import make_tasks
from ..errors import UserError, lookup
from ..models import load_model, load_tokenizer, resolve_model
from ..models.lora import ADAPTER_DIR, apply_lora
from ..rollout.diversity import DiverseSelector, make_embedder
from ..rollout.groups import StrategySelector, first_n
from ..rollout.horizon import Horizon
from ..types import Group, from_dict
from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from .data import TaskSampler
from .logging import RunLogger
from .policy import bf16_supported, device_of, make_value_head
from .update import Critic, policy_step


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
    pool: EnvPool | RayEnvPool
    """Env workers (local processes or Ray actors, by `cfg.executor`)."""
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
    ref_step: nn.Module | None = None
    """FSDP2: the reference sharded over the ranks, as the `PolicyStep` root it runs through."""
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
    dp: distributed.DataParallel | None = None
    """This process's rank in a `torchrun` run (None: a single process)."""
    experience: ExperienceLibrary | None = None
    """SLEA-RL step-experience library (None when `experience.enabled` is false)."""

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
    head = make_value_head(model, cfg.seed).to(device_of(model))
    return Critic(head=head, model=backbone, coef=cfg.critic.coef, clip=cfg.critic.clip, token_level=needs == "token")


def trainer_device(name: str) -> torch.device:
    """`auto`: the GPU when CUDA is available, else the CPU; `cuda` without CUDA is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda, but torch sees no CUDA device: use device=auto or device=cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _optimizer(cfg: TrainConfig, model: nn.Module, critic: Critic | None) -> tuple[torch.optim.Optimizer, Any]:
    o = cfg.optim
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": o.lr}]  # LoRA: adapters only
    if critic is not None:
        groups.append({"params": [p for p in critic.parameters() if p.requires_grad], "lr": cfg.critic.lr})
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


def _local_pool(cfg: TrainConfig) -> EnvPool:
    return EnvPool(num_workers=cfg.env.workers, step_timeout=cfg.env.step_timeout)


def _ray_pool(cfg: TrainConfig) -> RayEnvPool:
    connect(cfg.ray.address)
    return RayEnvPool(cfg.ray.num_env_workers, cfg.ray.cpus_per_worker, step_timeout=cfg.env.step_timeout)


POOLS = {"local": _local_pool, "ray": _ray_pool}
"""Env pool builders by `executor` name."""


def make_pool(cfg: TrainConfig) -> EnvPool | RayEnvPool:
    """The env pool of `cfg.executor`; an unknown name is an error that names the choices."""
    return lookup("executor", cfg.executor, POOLS)(cfg)


def make_rollout_engine(cfg: TrainConfig, path: Path, tokenizer: Any) -> Engine:
    """The rollout engine; in a Ray actor when `executor: ray` and `ray.engine_actor` (the `hf` engine)."""
    if cfg.executor != "ray" or not cfg.ray.engine_actor:
        return make_engine(path, cfg.engine, tokenizer)
    if cfg.engine.name != "hf":
        raise UserError(f"ray.engine_actor runs the `hf` engine in a Ray actor, but engine.name is "
                        f"'{cfg.engine.name}': set engine.name=hf or ray.engine_actor=false")
    connect(cfg.ray.address)
    return RayEngine(path, cfg.engine.hf, cfg.ray.engine_cpus)


def _policy(cfg: TrainConfig, path: Path, resume: bool) -> nn.Module:
    """The model to train; with LoRA, adapters on the run's base model (a resumed run: the base it
    started from, with the checkpoint's trained adapters)."""
    if not cfg.lora.enabled:
        return load_model(path)
    if not resume:
        return apply_lora(load_model(path), cfg.lora, seed=cfg.seed)
    sft = Path(cfg.out_dir) / cfg.name / "checkpoints" / "sft"
    base = sft if cfg.warmup.enabled else resolve_model(cfg.model)
    return apply_lora(load_model(base), cfg.lora, adapter=path / ADAPTER_DIR)


class _NoLogs:
    """The logger of every rank but 0: metrics, checkpoints and files are rank 0's to write."""

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def build_state(cfg: TrainConfig, model_path: Path | None = None, resume: dict | None = None,
                dp: distributed.DataParallel | None = None) -> TrainState:
    """A fresh run from `model_path` (default: the configured model), or a resumed one; `dp`: this
    process's rank in a data-parallel run (`distributed.init`)."""
    run_dir = Path(cfg.out_dir) / cfg.name
    path = Path(model_path) if model_path else resolve_model(cfg.model)
    tokenizer, model = load_tokenizer(path), _policy(cfg, path, resume is not None)
    model.to(dp.device if dp is not None else trainer_device(cfg.device))
    critic = _critic(cfg, model)
    ref = copy.deepcopy(model).eval() if cfg.algo.loss.kl_coef > 0 else None
    if resume:
        _restore_modules(resume, critic, ref)
    if dp is not None:  # before the optimizer: FSDP2 replaces the parameters by sharded ones
        distributed.wrap(dp, policy_step(model, critic))
    optimizer, scheduler = _optimizer(cfg, model, critic)
    main = dp is None or dp.is_main
    tasks = make_tasks(cfg.env.id, cfg.env.train_split, n=cfg.env.train_tasks or None, start=cfg.env.train_start)
    state = TrainState(
        cfg=cfg, run_dir=run_dir, model=model, tokenizer=tokenizer,
        engine=make_rollout_engine(cfg, path, tokenizer),
        pool=make_pool(cfg),
        optimizer=optimizer, scheduler=scheduler, sampler=TaskSampler(tasks, cfg.seed),
        horizon=Horizon(cfg.rollout.horizon),
        logger=RunLogger(run_dir, cfg.logging.tensorboard, cfg.logging.wandb, config=to_dict(cfg),
                         resume_at=resume["iteration"] if resume else None) if main else _NoLogs(),
        generator=torch.Generator().manual_seed(cfg.seed),
        bf16=cfg.optim.bf16 == "on" or (cfg.optim.bf16 == "auto" and bf16_supported()),
        critic=critic, ref_model=ref,
        ref_step=distributed.shard_frozen(dp, ref) if ref is not None and distributed.sharded(dp) else None,
        selector=_selector(cfg, model, tokenizer), context=int(model.config.max_position_embeddings),
        experience=initial_library(cfg.experience),
    )
    state.dp = dp
    if resume:
        restore(state, resume)
    else:
        torch.manual_seed(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        save_config(cfg, run_dir / "config.yaml")
    return state


def _restore_modules(snap: dict[str, Any], critic: Critic | None, ref: nn.Module | None) -> None:
    """The critic's and the reference's saved weights, loaded while every module is still whole."""
    if critic is not None and snap.get("critic_head") is not None:
        critic.head.load_state_dict(snap["critic_head"])
        if critic.model is not None and snap.get("critic_model") is not None:
            critic.model.load_state_dict(snap["critic_model"])
    if ref is not None and snap.get("ref_model") is not None:
        ref.load_state_dict(snap["ref_model"])


def snapshot(state: TrainState) -> dict[str, Any]:
    """Everything besides the model weights that an exact resume needs (under FSDP2 a collective: every
    rank gathers the full state dicts)."""
    c, dp = state.critic, state.dp

    def full(m: nn.Module | None) -> dict | None:
        return None if m is None else distributed.full_state_dict(m, dp)

    return {
        "iteration": state.iteration, "sampler_position": state.sampler.position, "horizon_stage": state.horizon.stage,
        "buffer": [to_dict(g) for g in state.buffer], "bad_updates": state.bad_updates,
        "optimizer": distributed.full_optimizer_state(dp, dp.module if dp else None, state.optimizer),
        "scheduler": state.scheduler.state_dict(),
        "generator": state.generator.get_state(), "rng": ckpt.rng_state(),
        "critic_head": full(c.head) if c else None,
        "critic_model": full(c.model) if c else None,
        "ref_model": full(state.ref_model),
        "experience": to_dict(state.experience) if state.experience is not None else None,
    }


def restore(state: TrainState, snap: dict[str, Any]) -> None:
    state.iteration = snap["iteration"]
    state.sampler.position = snap["sampler_position"]
    state.horizon.stage = snap["horizon_stage"]
    state.buffer = [from_dict(Group, g) for g in snap["buffer"]]
    state.bad_updates = snap["bad_updates"]
    distributed.load_full_optimizer_state(state.dp, state.optimizer, snap["optimizer"])
    state.scheduler.load_state_dict(snap["scheduler"])
    state.generator.set_state(snap["generator"])
    ckpt.set_rng_state(snap["rng"])
    # the critic's and the reference's weights were loaded in build_state, before any sharding
    if state.experience is not None and snap.get("experience") is not None:
        state.experience = from_dict(ExperienceLibrary, snap["experience"])


def save(state: TrainState, name: str) -> Path:
    """Rank 0 writes the checkpoint (under DDP every rank holds the same weights and optimizer state)."""
    path = state.run_dir / "checkpoints" / name
    dp = state.dp
    weights = _untied(state.model, distributed.full_state_dict(state.model, dp)) if distributed.sharded(dp) else None
    snap = snapshot(state) if distributed.sharded(dp) or dp is None or dp.is_main else None
    if dp is None or dp.is_main:
        path = ckpt.save_checkpoint(state.run_dir, name, state.model, state.tokenizer, snap,
                                    keep=state.cfg.checkpoint.keep, weights=weights, agent=format_of(state.cfg))
    distributed.barrier(state.dp)
    return path


def _untied(model: nn.Module, weights: dict[str, Any]) -> dict[str, Any]:
    """A gathered state dict without the keys the model ties to others (a tied `lm_head.weight` is the
    embedding; gathering made it a separate tensor, which `save_pretrained` would then write)."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {}
    if not getattr(model.config, "tie_word_embeddings", False):
        return weights
    return {k: v for k, v in weights.items() if k not in tied}


def close(state: TrainState) -> None:
    state.pool.close()
    state.engine.close()
    state.logger.close()
