"""Evaluating a model agent: one episode per task through the runner (ReAct, or strategy-first)."""

from __future__ import annotations

from typing import Any

from ..engines import EngineConfig, make_engine
from ..envs.pool import EnvPool
from ..envs.registry import get_spec
from ..models import load_tokenizer, resolve_model
from ..types import Group, Task, Trajectory
from .groups import GroupConfig, sample_groups
from .runner import RunnerConfig, StepSampling


def evaluate_groups(engine: Any, tokenizer: Any, pool: EnvPool, tasks: list[Task], rcfg: RunnerConfig,
                    strategy: bool, seed: int, batch: int = 64) -> list[Group]:
    """One rollout per task (a group of one), tasks run `batch` at a time."""
    gcfg = GroupConfig(strategy=strategy, n_strategies=1, n_rollouts=1, candidates=1)
    groups: list[Group] = []
    for lo in range(0, len(tasks), batch):
        groups += sample_groups(engine, tokenizer, pool, tasks[lo:lo + batch], gcfg, rcfg, seed + lo)
    return groups


def run_model_agent(cfg: Any, tasks: list[Task], engine: Any = None, tokenizer: Any = None) -> list[Trajectory]:
    """`cfg` is an `EvalConfig`; the engine and tokenizer are built from `cfg.model` unless given."""
    path = resolve_model(cfg.model)
    tokenizer = tokenizer or load_tokenizer(path)
    own = engine is None
    engine = engine or make_engine(path, EngineConfig(name=cfg.engine), tokenizer)
    rcfg = RunnerConfig(max_steps=cfg.max_steps or get_spec(tasks[0].env).max_steps,
                        context=_context(path), sampling=StepSampling(temperature=cfg.temperature),
                        prompt=cfg.prompt)
    try:
        with EnvPool(num_workers=cfg.workers) as pool:
            groups = evaluate_groups(engine, tokenizer, pool, tasks, rcfg, cfg.strategy, cfg.seed)
    finally:
        if own:
            engine.close()
    return [t for g in groups for t in g.flat]


def _context(path: Any) -> int:
    import json

    cfg = json.loads((path / "config.json").read_text())
    return int(cfg.get("max_position_embeddings", 2048))
