"""`AutoCoAConfig`: the one config dataclass of `stratarl autocoa` (YAML + dotted overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .simulate import CoARolloutConfig

STAGE_NAMES = ("sft1", "sft2", "sft3", "rl_sim", "rl_real")


@dataclass
class GoldSection:
    """Gold trajectories (the env's expert actions) for the SFT stages."""

    split: str = "train"
    """Split the gold episodes come from."""
    tasks: int = 200
    """Number of gold episodes."""
    start: int = 0
    """Index of the first task."""


@dataclass
class SFTSection:
    """The three supervised stages."""

    lr: float = 1e-3
    """Peak learning rate (AdamW) of every SFT stage, linear decay to 10% within each stage."""
    batch_rows: int = 16
    """Rows (stage 1: pairs) per optimizer step."""
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch."""
    warmup_steps: int = 5
    """Linear warm-up steps of each stage."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    sft1_epochs: int = 2
    """Epochs of stage 1 (contrastive when-to-act pairs)."""
    sft2_epochs: int = 3
    """Epochs of stage 2 (CoT+CoA, observations masked)."""
    sft3_epochs: int = 2
    """Epochs of stage 3 (CoT+CoA, observations trained: the implicit world model)."""
    alpha: float = 0.2
    """α of the contrastive loss: L = −log σ(P_ch − P_rej) + α·(−P_ch)."""


@dataclass
class RLSection:
    """The two GRPO stages (simulated env, then the real one)."""

    sim_iterations: int = 10
    """Iterations of RL stage 1 (simulated environment)."""
    real_iterations: int = 10
    """Iterations of RL stage 2 (real environment)."""
    tasks_per_iteration: int = 4
    """Questions per iteration (train split, in order, wrapping around)."""
    group_size: int = 4
    """Episodes per question (the GRPO group)."""
    lr: float = 2e-4
    """Learning rate (AdamW, constant)."""
    epochs: int = 1
    """PPO epochs over each iteration's rows."""
    clip: float = 0.2
    """PPO clip ε (low and high)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch."""
    train_tasks: int = 0
    """Use only the first K train questions (0 = all)."""


@dataclass
class EvalSection:
    """Greedy held-out evaluation in the real env."""

    split: str = "test"
    """Split to evaluate on."""
    episodes: int = 50
    """Questions evaluated (from index 0)."""
    after: list[str] = field(default_factory=list)
    """Evaluate after these stages (also `base`: before any stage); [] = only after the last stage."""


@dataclass
class AutoCoAConfig:
    """`stratarl autocoa`: AutoCoA's staged training (SFT 1-3, RL in a simulated env, RL in the real env)."""

    name: str = "autocoa"
    """Run name: output goes to `<out_dir>/<name>/`, one checkpoint per stage in `<name>/<stage>/`."""
    out_dir: str = "runs"
    """Where runs are written."""
    seed: int = 0
    """Seed of shuffling and sampling."""
    model: str = "tiny"
    """Model name (`tiny`, `smollm2-135m`) or a local checkpoint directory to start from."""
    env: str = "search:synthkb?k=2"
    """The search-QA env, with parameters (k = documents per search)."""
    stages: list[str] = field(default_factory=lambda: list(STAGE_NAMES))
    """Stages to run, in order: any of sft1, sft2, sft3, rl_sim, rl_real."""
    gold: GoldSection = field(default_factory=GoldSection)
    """Gold trajectories for the SFT stages."""
    sft: SFTSection = field(default_factory=SFTSection)
    """SFT stages 1-3."""
    rl: RLSection = field(default_factory=RLSection)
    """RL stages."""
    rollout: CoARolloutConfig = field(default_factory=CoARolloutConfig)
    """How chain-of-action episodes are sampled."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Held-out evaluation."""
    bf16: Literal["auto", "on", "off"] = "off"
    """bf16 autocast in training."""
