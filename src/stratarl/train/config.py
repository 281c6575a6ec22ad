"""`TrainConfig`: the one config dataclass of `stratarl train` (YAML + dotted overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..rollout.groups import GroupConfig
from ..rollout.horizon import HorizonConfig
from ..rollout.runner import RunnerConfig
from .samples import SampleConfig


@dataclass
class ModelSection:
    """The policy and how it generates."""

    name: str = "tiny"
    """Model name (`tiny`, `smollm2-135m`) or a local HF checkpoint directory."""
    engine: str = "hf"
    """Rollout engine: `hf` (in-process), `vllm`, or `openai` (evaluation only)."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast in the trainer: `auto` uses it where the CPU has AMX / AVX-512-BF16."""
    engine_dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Engine weights' dtype (`auto`: bf16 where supported)."""


@dataclass
class EnvSection:
    """Where tasks come from."""

    id: str = "twx:cookingworld"
    """Environment id, with `?param=value` parameters."""
    train_split: str = "train"
    """Split the RL tasks are drawn from."""
    train_tasks: int = 0
    """Use only the first K tasks of the train split (0 = all)."""
    tasks_per_iteration: int = 4
    """Groups (tasks) per iteration."""
    workers: int | None = None
    """Env worker processes (None: one per two cores)."""
    step_timeout: float = 60.0
    """Seconds an env step may take before its worker is restarted."""


@dataclass
class RolloutSection:
    """Rollout tree, episode runner and horizon schedule."""

    group: GroupConfig = field(default_factory=GroupConfig)
    """N strategies x M rollouts per task."""
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    """How episodes are run (penalties, sampling, prompts)."""
    horizon: HorizonConfig = field(default_factory=HorizonConfig)
    """Steps per episode, possibly scheduled (ScalingInter-RL)."""


@dataclass
class OptimSection:
    """Optimizer and PPO epochs."""

    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Decay after warm-up, over `TrainConfig.iterations` updates."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    epochs: int = 1
    """PPO epochs over each iteration's rows."""
    minibatches: int = 1
    """Optimizer steps per epoch (the rows are split into this many mini-batches)."""
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch (gradient accumulation splits a mini-batch into these)."""
    max_bad_updates: int = 3
    """Stop the run after this many consecutive non-finite updates (each is skipped)."""


@dataclass
class CriticSection:
    """The critic used by step-GAE (StepPO) and token-level GAE (PPO)."""

    kind: Literal["auto", "none", "head", "separate"] = "auto"
    """`head`: a value head on the policy; `separate`: a second copy of the model; `auto`: a head
    when the estimator needs values, none otherwise."""
    lr: float = 1e-4
    """Learning rate of the critic's own parameters."""
    coef: float = 0.5
    """Weight of the value loss."""
    clip: float = 0.2
    """Value clipping range (0 = off)."""


@dataclass
class EvalSection:
    """Held-out evaluation during training."""

    every: int = 0
    """Evaluate every K iterations (0 = only when asked)."""
    split: str = "test"
    """Split to evaluate on."""
    episodes: int = 50
    """Episodes per evaluation."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy)."""


@dataclass
class CheckpointSection:
    """When to write checkpoints."""

    every: int = 1
    """Checkpoint every K iterations (and always at the end)."""
    keep: int = 2
    """Numbered checkpoints kept (0 = all)."""


@dataclass
class LoggingSection:
    """Where metrics and trajectories go."""

    tensorboard: bool = True
    """Write TensorBoard events under `tb/`."""
    wandb: bool = False
    """Log to Weights & Biases when the package is installed."""
    trajectories: bool = True
    """Write every episode to `trajectories/<iteration>.jsonl`."""
    progress: bool = True
    """Show a progress bar in the terminal."""


@dataclass
class AlgoSection:
    """Which estimator and losses, with all their options."""

    estimator: str = "grpo"
    """Advantage estimator: grpo, drgrpo, rloo, reinforce_pp, gigpo, strata, step_gae, gae, mt_grpo."""
    samples: SampleConfig = field(default_factory=SampleConfig)
    """Which rows are trained."""
    kl_coef: float = 0.0
    """β of the KL penalty to the reference policy (0 disables the reference model entirely)."""
