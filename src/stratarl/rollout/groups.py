"""The hierarchical group sampler: per task, N strategies x M rollouts (StraTA, seed 000).

All N*M episodes of a task are opened first, from the same Task seed, so they start from the same
state; the strategy prompt is built from that shared first observation. For each task, σ·N
candidate strategies are sampled and a selector picks N of them (default: the first N samples; the
StraTA diversity selector picks them by farthest-point sampling). Flat algorithms (GRPO, GiGPO, ...)
use N = 1 and no strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..agent.parse import parse_strategy
from ..agent.prompts import render, strategy_messages
from ..engines.base import Engine, SamplingParams
from ..envs.pool import EnvPool, EnvReply
from ..types import Group, Task, Turn
from .runner import EpisodeStart, RunnerConfig, family_of, request_seed, run_episodes


@dataclass
class GroupConfig:
    """Shape of the rollout tree of one task."""

    strategy: bool = False
    """Generate strategies first (StraTA); False gives flat groups of M rollouts."""
    n_strategies: int = 1
    """N: strategies per task (used when `strategy` is true)."""
    n_rollouts: int = 4
    """M: rollouts per strategy (per task for flat groups)."""
    candidates: int = 1
    """σ: candidate strategies sampled per selected one (σ·N candidates per task)."""


# (candidate turns per task, their parsed plans per task, N) -> chosen indices per task
StrategySelector = Callable[[list[list[Turn]], list[list[str]], int], list[list[int]]]


def first_n(candidates: list[list[Turn]], plans: list[list[str]], n: int) -> list[list[int]]:
    """Default selector: the first N samples of each task."""
    return [list(range(min(n, len(c)))) for c in candidates]


def sample_groups(engine: Engine, tokenizer: Any, pool: EnvPool, tasks: list[Task], gcfg: GroupConfig,
                  rcfg: RunnerConfig, seed: int, selector: StrategySelector = first_n,
                  descriptions: dict[str, str] | None = None,
                  experience: Callable[[str], str] | None = None) -> list[Group]:
    """Roll out every task as a group; returns one Group per task, in order. When given,
    `descriptions` is filled with each task's description (task uid -> text), for the judge, and
    `experience` is passed to the runner (SLEA-RL step-level retrieval)."""
    n = gcfg.n_strategies if gcfg.strategy else 1
    per_task = n * gcfg.n_rollouts
    replies = pool.reset([t for t in tasks for _ in range(per_task)])
    firsts = [replies[k * per_task] for k in range(len(tasks))]
    if descriptions is not None:
        descriptions.update({t.uid: r.info.get("task_description", "") for t, r in zip(tasks, firsts, strict=True)})
    strategies: list[list[Turn]] = [[] for _ in tasks]
    plans: list[list[str]] = [[] for _ in tasks]
    if gcfg.strategy:
        strategies, plans = sample_strategies(engine, tokenizer, tasks, firsts, gcfg, rcfg, seed, selector)
    starts = []
    for k, task in enumerate(tasks):
        for i in range(n):
            for j in range(gcfg.n_rollouts):
                reply = replies[k * per_task + i * gcfg.n_rollouts + j]
                turn = strategies[k][i] if gcfg.strategy else None
                starts.append(EpisodeStart(
                    task=task, reply=reply, strategy=turn, strategy_text=plans[k][i] if turn else None,
                    strategy_uid=f"{task.uid}/s{i}" if turn else "", uid=f"{task.uid}/s{i}/r{j}/{seed}"))
    trajs = run_episodes(engine, tokenizer, pool, starts, rcfg, seed, experience)
    return [Group(task=task, strategies=strategies[k],
                  trajectories=[trajs[k * per_task + i * gcfg.n_rollouts:k * per_task + (i + 1) * gcfg.n_rollouts]
                                for i in range(n)])
            for k, task in enumerate(tasks)]


def sample_strategies(engine: Engine, tokenizer: Any, tasks: list[Task], firsts: list[EnvReply], gcfg: GroupConfig,
                      rcfg: RunnerConfig, seed: int, selector: StrategySelector) -> tuple[list[list[Turn]], list[list[str]]]:
    """σ·N candidates per task from one prompt each, then N chosen by `selector`."""
    prompts = [render(tokenizer, strategy_messages(family_of(t), r.info.get("task_description", ""), r.observation,
                                                   rcfg.prompt)) for t, r in zip(tasks, firsts, strict=True)]
    n_cand = max(gcfg.n_strategies, gcfg.n_strategies * gcfg.candidates)
    params = SamplingParams(temperature=rcfg.sampling.temperature or 1.0, top_p=rcfg.sampling.top_p,
                            max_tokens=rcfg.sampling.strategy_max_tokens, stop=["</strategy>"], n=n_cand,
                            seed=request_seed(seed, "strategy"))
    comps = engine.generate(prompts, params)
    cands = [[Turn(prompt_ids=prompts[k], response_ids=list(c.token_ids), logprobs=list(c.logprobs), text=c.text,
                   finish_reason=c.finish_reason) for c in comps[k * n_cand:(k + 1) * n_cand]]
             for k in range(len(tasks))]
    cand_plans = [[parse_strategy(t.text) for t in ts] for ts in cands]
    chosen = selector(cands, cand_plans, gcfg.n_strategies)
    return ([[cands[k][i] for i in idx] for k, idx in enumerate(chosen)],
            [[cand_plans[k][i] for i in idx] for k, idx in enumerate(chosen)])
