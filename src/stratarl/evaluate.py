"""Evaluation over a split: success rate with a 95% Wilson interval, mean score, mean steps,
invalid-action rate and termination counts.

Reference agents need no model: `gold` replays the env's expert actions (100% where gold paths
exist), `random` picks uniformly among admissible actions (seeded). Model agents run through the
rollout runner (`agent="model"`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .agent.format import FormatKeys
from .agent.prompts import PromptConfig
from .envs.pool import EnvPool
from .envs.registry import get_spec, make_tasks, parse_env_id
from .errors import UserError
from .stats import Interval, wilson
from .types import TERMINATIONS, Step, Task, Trajectory


@dataclass
class EvalConfig:
    """`stratarl eval`: evaluate an agent on one split of one environment."""

    format_keys: ClassVar[FormatKeys] = FormatKeys(model=("model",), prompt="prompt", strategy="strategy")
    """Where the agent format lives: a checkpoint's `agent.json` fills what the flags leave unset."""
    model: str = "tiny"
    """Model name (`tiny`, `smollm2-135m`) or a local checkpoint directory (agent `model`)."""
    env: str = "twx:cookingworld"
    """Environment id, optionally with `?param=value` parameters."""
    split: str = "test"
    """`train`, `dev` or `test`."""
    episodes: int = 100
    """Number of tasks (one episode each), from `start`."""
    start: int = 0
    """Index of the first task of the split."""
    agent: Literal["model", "gold", "random"] = "model"
    """`model` (the policy), `gold` (expert replay) or `random` (uniform admissible actions)."""
    strategy: bool = False
    """Model agent: generate a strategy first (StraTA) instead of plain ReAct (default: as the checkpoint
    was trained)."""
    engine: str = "hf"
    """Generation engine for the model agent: `hf`, `openai` or `vllm`."""
    max_steps: int | None = None
    """Episode horizon; None uses the environment's default."""
    workers: int | None = None
    """Env worker processes (None: one per two cores)."""
    seed: int = 0
    """Seed for sampling / the random agent."""
    temperature: float = 0.0
    """Sampling temperature of the model agent (0 = greedy)."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Step prompt layout of the model agent: mode, history, think, prime, ... (default: the one the
    checkpoint was trained with, from its `agent.json`)."""


@dataclass
class EvalReport:
    """What an evaluation measured."""

    env: str
    """Environment id evaluated."""
    split: str
    """Split evaluated."""
    agent: str
    """Agent evaluated (`model:<name>`, `gold`, `random`)."""
    episodes: int
    """Number of episodes."""
    success: Interval
    """Success rate with its 95% Wilson interval."""
    wins: int
    """Number of won episodes."""
    mean_score: float
    """Mean final env score (0..1; ScienceWorld's -1 for a failed task counts as 0)."""
    mean_outcome: float
    """Mean episode reward."""
    mean_steps: float
    """Mean number of steps."""
    invalid_rate: float
    """Fraction of steps whose action was invalid."""
    terminations: dict[str, int] = field(default_factory=dict)
    """Episodes per termination reason."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "env": self.env, "split": self.split, "agent": self.agent, "episodes": self.episodes,
            "success_rate": self.success.value, "success_ci95": [self.success.low, self.success.high],
            "wins": self.wins, "mean_score": self.mean_score, "mean_outcome": self.mean_outcome,
            "mean_steps": self.mean_steps, "invalid_rate": self.invalid_rate, "terminations": self.terminations,
        }


def summarize(trajs: list[Trajectory], env: str, split: str, agent: str) -> EvalReport:
    wins = sum(t.won for t in trajs)
    n = len(trajs)
    steps = [s for t in trajs for s in t.steps]
    scores = [max(0.0, t.steps[-1].info.get("score", 0.0)) if t.steps else 0.0 for t in trajs]
    terms = Counter(t.termination for t in trajs)
    return EvalReport(
        env=env, split=split, agent=agent, episodes=n, success=wilson(wins, n), wins=wins,
        mean_score=sum(scores) / max(n, 1), mean_outcome=sum(t.outcome for t in trajs) / max(n, 1),
        mean_steps=len(steps) / max(n, 1),
        invalid_rate=sum(not s.valid for s in steps) / max(len(steps), 1),
        terminations={k: terms[k] for k in TERMINATIONS if terms[k]},
    )


# -- reference agents ---------------------------------------------------------------------------

Chooser = Callable[[int, dict[str, Any]], str | None]


def _gold_chooser(tasks: list[Task], pool: EnvPool) -> Callable[[Task], Chooser]:
    plans = {t.uid: pool.expert_actions(t) or [] for t in tasks}

    def make(task: Task) -> Chooser:
        plan = plans[task.uid]
        return lambda k, info: plan[k] if k < len(plan) else None  # a gold agent stops where its plan ends
    return make


def _random_chooser(seed: int) -> Callable[[Task], Chooser]:
    def make(task: Task) -> Chooser:
        rng = random.Random(f"{seed}/{task.uid}")

        def choose(k: int, info: dict[str, Any]) -> str:
            acts = info.get("admissible_actions")
            if not acts:
                raise UserError(f"{task.env} gives no admissible actions, so the random agent cannot act")
            return rng.choice(acts)
        return choose
    return make


def run_reference_agent(cfg: EvalConfig, tasks: list[Task], pool: EnvPool) -> list[Trajectory]:
    """Episodes of the gold or random agent, all stepped together through the pool."""
    spec = get_spec(tasks[0].env)
    horizon = cfg.max_steps or spec.max_steps
    if cfg.agent == "gold":
        horizon = max(horizon, 1000)  # gold paths may be longer than a model's horizon
    make = _gold_chooser(tasks, pool) if cfg.agent == "gold" else _random_chooser(cfg.seed)
    trajs: dict[int, Trajectory] = {}
    state: dict[int, tuple[Chooser, str, dict]] = {}
    for task, r in zip(tasks, pool.reset(tasks), strict=True):
        trajs[r.episode] = Trajectory(task=task, task_uid=task.uid, uid=f"{cfg.agent}:{task.uid}")
        state[r.episode] = (make(task), r.observation, r.info)
        if r.error:
            _end(trajs[r.episode], r.error_kind or "env_error", r.error, r.info)
            state.pop(r.episode)
    while state:
        chosen = [(e, choose(len(trajs[e].steps), info)) for e, (choose, _, info) in state.items()]
        for e, action in chosen:
            if action is None:  # the gold path ran out before the game ended (an expert that found none)
                _end(trajs[e], "max_steps", None, state.pop(e)[2])
        actions = [(e, a) for e, a in chosen if a is not None]
        if not actions:
            continue
        for (e, action), r in zip(actions, pool.step(actions), strict=True):
            choose, anchor, _ = state[e]
            traj = trajs[e]
            if r.error:
                _end(traj, r.error_kind or "env_error", r.error, {})
                del state[e]
                continue
            traj.steps.append(_step(action, anchor, r))
            state[e] = (choose, r.observation, r.info)
            if r.done or len(traj.steps) >= horizon:
                _end(traj, "success" if r.info.get("won") else ("env_done" if r.done else "max_steps"), None, r.info)
                del state[e]
    pool.release(trajs)
    return list(trajs.values())


def _step(action: str, anchor: str, r: Any) -> Step:
    return Step(prompt_ids=[], response_ids=[], logprobs=[], text=action, action=action, anchor=anchor,
                observation=r.observation, reward=r.reward, done=r.done,
                valid=bool(r.info.get("action_valid", True)),
                info={"score": r.info.get("score", 0.0), "won": r.info.get("won", False)})


def _end(traj: Trajectory, termination: str, error: str | None, info: dict) -> None:
    traj.termination = termination  # type: ignore[assignment]
    traj.error = error
    traj.won = bool(info.get("won", False))
    traj.outcome = float(info.get("outcome", 0.0))


def eval_tasks(cfg: EvalConfig) -> list[Task]:
    env_id = cfg.env
    spec, params = parse_env_id(env_id)
    if cfg.agent == "random" and "admissible" in spec.params and not params.get("admissible"):
        env_id += ("&" if "?" in env_id else "?") + "admissible=1"  # ScienceWorld: ask for the list
    return make_tasks(env_id, cfg.split, n=cfg.episodes, start=cfg.start)


def evaluate(cfg: EvalConfig) -> tuple[EvalReport, list[Trajectory]]:
    """Run the configured agent on the split; returns the report and every trajectory."""
    tasks = eval_tasks(cfg)
    if cfg.agent == "model":
        from .rollout.evaluate import run_model_agent  # torch only when a model is evaluated

        trajs = run_model_agent(cfg, tasks)
        label = f"model:{cfg.model}" + ("+strategy" if cfg.strategy else "")
    else:
        with EnvPool(num_workers=cfg.workers) as pool:
            trajs = run_reference_agent(cfg, tasks, pool)
        label = cfg.agent
    return summarize(trajs, tasks[0].env, cfg.split, label), trajs
