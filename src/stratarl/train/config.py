"""`TrainConfig`: the one config dataclass of `stratarl train` (YAML + dotted overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ..agent.experience import ExperienceConfig
from ..agent.format import FormatKeys
from ..algos.advantages import AdvantageConfig
from ..algos.diversity_rewards import DiversityRewardConfig
from ..algos.losses import LossConfig
from ..engines import EngineConfig
from ..models.lora import LoRAConfig
from ..rollout.diversity import DiversityConfig
from ..rollout.groups import GroupConfig
from ..rollout.horizon import HorizonConfig
from ..rollout.judge import JudgeConfig
from ..rollout.runner import RunnerConfig
from .data import DynamicSamplingConfig
from .samples import SampleConfig
from .sft import SFTConfig


@dataclass
class EnvSection:
    """Where tasks come from."""

    id: str = "twx:cookingworld"
    """Environment id, with `?param=value` parameters."""
    train_split: str = "train"
    """Split the RL tasks are drawn from."""
    train_tasks: int = 0
    """Use only K tasks of the train split, from `train_start` (0 = all from there)."""
    train_start: int = 0
    """Index of the first RL task in the train split: with the warm-up on tasks `[0, warmup.sft.data.tasks)`,
    starting RL after them gives it games the warm-up never saw, so its reward measures generalisation."""
    tasks_per_iteration: int = 4
    """Groups (tasks) per iteration."""
    methods: float = 0.0
    """Share of each iteration's tasks whose episodes the agent plays through a method lens: CookingWorld's
    cooking methods and cuts permuted (`rollout/rename.draw_methods`), one draw per task and iteration, the
    real game underneath. TextWorldExpress's folds fix each ingredient's preparation, so reward on train
    games also pays for remembering it, which held-out games punish; behind a lens only reading the
    recipe earns it (docs/results.md, "RL behind lenses")."""
    furniture: float = 0.0
    """Share of each iteration's tasks whose furniture that some folds lack the agent sees under another name
    (`rollout/rename.FURNITURE`: train kitchens have a kitchen cupboard, test kitchens none)."""
    containers: float = 0.0
    """Share of each iteration's tasks whose kitchen containers the agent sees renamed among themselves
    (`rollout/rename.draw_containers`): reward on train games otherwise also pays for the fold's habits
    (open the kitchen cupboard, the knife is in the cutlery drawer), which test games punish."""
    workers: int | None = None
    """Env worker processes (None: one per two cores)."""
    step_timeout: float = 60.0
    """Seconds an env step may take before its worker is restarted."""


@dataclass
class RaySection:
    """The Ray executor (`executor: ray`): env workers, and optionally the engine, as Ray actors."""

    address: str = ""
    """Cluster to join: `auto` (started with `ray start --head`), `ray://host:10001`, or '' for a local Ray."""
    num_env_workers: int = 2
    """Env actors; each hosts many episodes (one JVM per env family)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each env actor (placement by resources)."""
    engine_actor: bool = False
    """Run the `hf` rollout engine in a Ray actor too (else it runs in the trainer's process)."""
    engine_cpus: float = 1.0
    """CPUs Ray reserves for the engine actor."""


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
class StrategySection:
    """StraTA's strategy-level components."""

    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    """Farthest-point selection of σ·N candidate strategies (σ = `rollout.group.candidates`)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """Critical self-judgment."""


@dataclass
class AlgoSection:
    """Estimator, losses and training rows."""

    estimator: str = "grpo"
    """grpo, drgrpo, rloo, reinforce_pp, gigpo, strata, ecpo, step_gae, gae, mt_grpo."""
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    """Options of the estimators."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Policy loss, aggregation, KL, entropy, importance correction."""
    samples: SampleConfig = field(default_factory=SampleConfig)
    """Which rows are trained."""
    diversity_rewards: DiversityRewardConfig = field(default_factory=DiversityRewardConfig)
    """DPEPO's step-level diversity rewards (off by default), combined with any estimator's advantages."""


@dataclass
class OptimSection:
    """Optimizer and PPO epochs."""

    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Decay after warm-up, over all optimizer steps of the run."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    epochs: int = 1
    """PPO epochs over each iteration's rows."""
    minibatches: int = 1
    """Optimizer steps per epoch (the rows are split into this many mini-batches)."""
    micro_batch_tokens: int = 16384
    """Padded tokens per micro-batch (gradient accumulation splits a mini-batch into these)."""
    max_bad_updates: int = 3
    """Stop after this many consecutive skipped (non-finite) optimizer steps."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast in the trainer (`auto`: where the CPU has AMX / AVX-512-BF16)."""


@dataclass
class CriticSection:
    """The critic of step-GAE (StepPO) and token-level GAE (PPO)."""

    kind: Literal["auto", "none", "head", "separate"] = "auto"
    """`head`: a value head on the policy; `separate`: a second copy of the model with its own head;
    `auto`: a head when the estimator needs values, none otherwise."""
    lr: float = 1e-4
    """Learning rate of the critic's own parameters."""
    coef: float = 0.5
    """Weight of the value loss."""
    clip: float = 0.2
    """Value clipping range (0 = off)."""


@dataclass
class DistributedSection:
    """Data parallel over the processes `torchrun` starts (one process: ignored)."""

    strategy: Literal["ddp", "fsdp2"] = "ddp"
    """`ddp`: every rank holds the whole model; `fsdp2`: parameters, gradients and optimizer state sharded
    over ranks (`fully_shard`; no LoRA or policy embedder with it yet: docs/scaling.md)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Process-group backend (`auto`: nccl when CUDA is available, gloo otherwise)."""
    timeout_s: float = 1800.0
    """Seconds a collective may wait for the other ranks before the run fails."""
    shard_rollouts: bool = True
    """Each rank rolls out its share of the iteration's tasks (tasks rank, rank + W, ...), then the groups
    are all-gathered so every rank trains on the whole batch; false: every rank runs every rollout."""


@dataclass
class EvalSection:
    """Held-out evaluation."""

    every: int = 0
    """Evaluate every K iterations during RL (0 = never in between), on `every_split`."""
    every_split: str = "dev"
    """Split of the in-training evaluations (the dev split: the test split is kept for before/after)."""
    split: str = "test"
    """Split of the before/after evaluations."""
    episodes: int = 50
    """Episodes per in-training evaluation."""
    final_episodes: int = 0
    """Episodes of the before/after evaluations (after warm-up SFT and after RL); 0 skips them."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy)."""
    sampled: bool = False
    """Also evaluate with sampling at T = 1 (metrics `eval_sampled/*`, files `eval_*_sampled.json`)."""


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
class WarmupSection:
    """Supervised warm-up before RL (skipped when `enabled` is false)."""

    enabled: bool = False
    """Run SFT before the first RL iteration (the result is checkpoint `sft`)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The SFT settings (`sft.model` is ignored: the run's `model` is used)."""
    cache: bool = True
    """Keep the warm-up checkpoint under `$STRATARL_CACHE/warmups/<key>` (the key hashes the model, the SFT
    settings and the prompt) and reuse it: a second run with the same warm-up skips it."""


@dataclass
class TrainConfig:
    """`stratarl train`: (warm-up SFT), RL iterations, evaluation, checkpoints, report."""

    format_keys: ClassVar[FormatKeys] = FormatKeys(model=("model",), prompt="rollout.runner.prompt",
                                                   strategy="rollout.group.strategy")
    """Where the agent format lives: taken from a starting checkpoint's `agent.json`, recorded in every checkpoint."""
    name: str = "run"
    """Run name: output goes to `<out_dir>/<name>/`."""
    out_dir: str = "runs"
    """Where runs are written."""
    seed: int = 0
    """Seed of everything: task order, sampling, mini-batch order, initialisation of heads."""
    iterations: int = 10
    """RL iterations."""
    model: str = "tiny"
    """Model name (`tiny`, `smollm2-135m`) or a local HF checkpoint directory."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the trainer runs: `auto` is the GPU when CUDA is available (under torchrun the rank's own), else
    the CPU. The rollout engine places itself (`engine.*`). GPU training is not verified yet (docs/scaling.md)."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout engine."""
    env: EnvSection = field(default_factory=EnvSection)
    """Tasks."""
    executor: Literal["local", "ray"] = "local"
    """Where env workers run: `local` worker processes, or `ray` actors (settings under `ray`)."""
    ray: RaySection = field(default_factory=RaySection)
    """Ray executor settings (used when `executor` is `ray`)."""
    rollout: RolloutSection = field(default_factory=RolloutSection)
    """Rollouts."""
    strategy: StrategySection = field(default_factory=StrategySection)
    """StraTA's diversity and self-judgment."""
    algo: AlgoSection = field(default_factory=AlgoSection)
    """Estimator and losses."""
    optim: OptimSection = field(default_factory=OptimSection)
    """Optimizer."""
    critic: CriticSection = field(default_factory=CriticSection)
    """Critic (value-based estimators)."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA adapters on the policy instead of full fine-tuning (peft; docs/scaling.md)."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """Data-parallel training when started by `torchrun` (docs/scaling.md)."""
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    """Adaptive batch filling."""
    experience: ExperienceConfig = field(default_factory=ExperienceConfig)
    """SLEA-RL step-level experience library and retrieval into step prompts (off by default)."""
    warmup: WarmupSection = field(default_factory=WarmupSection)
    """Supervised warm-up."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Held-out evaluation."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoints."""
    logging: LoggingSection = field(default_factory=LoggingSection)
    """Logs."""
