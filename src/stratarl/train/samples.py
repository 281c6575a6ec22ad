"""From rolled-out Groups and their Advantages to training rows (`Sample`).

One row per step (`kind="action"`) and one per strategy turn (`kind="strategy"`): the exact prompt
ids the engine was fed followed by the exact response ids it sampled, with the loss on the response
only. Nothing is re-tokenized. The judge's own tokens are never turned into rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import Advantages, Group, Sample, Trajectory, Turn


@dataclass
class SampleConfig:
    """Which rows are trained."""

    train_strategy: bool = True
    """Train the strategy turns (with the strategy advantage)."""
    skip_zero_advantage: bool = False
    """Drop rows whose advantage is exactly 0 (they only add KL/entropy terms)."""
    max_response_tokens: int = 0
    """Cut responses longer than this (0 = keep all); guards against runaway generations."""


def _row(turn: Turn, advantage: float, uid: str, step_index: int, kind: str, cfg: SampleConfig) -> Sample | None:
    response = turn.response_ids
    logprobs = turn.logprobs
    if cfg.max_response_tokens and len(response) > cfg.max_response_tokens:
        response, logprobs = response[: cfg.max_response_tokens], logprobs[: cfg.max_response_tokens]
    if not response or not turn.prompt_ids:
        return None  # nothing the model generated (gold/reference steps) or an unrecorded prompt
    n_prompt = len(turn.prompt_ids)
    return Sample(
        input_ids=list(turn.prompt_ids) + list(response),
        loss_mask=[0] * n_prompt + [1] * len(response),
        advantage=float(advantage),
        engine_logprobs=[0.0] * n_prompt + list(logprobs),
        uid=uid, step_index=step_index, kind=kind,  # type: ignore[arg-type]
    )


def build_samples(groups: list[Group], adv: Advantages, cfg: SampleConfig) -> list[Sample]:
    """Rows in a fixed order (group, rollout, step; strategies after their group's steps)."""
    rows: list[Sample] = []
    for g, group in enumerate(groups):
        flat = group.flat
        for k, traj in enumerate(flat):
            rows.extend(_trajectory_rows(traj, adv.steps[g][k], adv, g, k, cfg))
        if cfg.train_strategy and group.strategies and adv.strategies:
            for i, turn in enumerate(group.strategies):
                uid = group.trajectories[i][0].strategy_uid if group.trajectories[i] else f"{group.task.uid}/s{i}"
                row = _row(turn, adv.strategies[g][i], uid, -1, "strategy", cfg)
                if row is not None and not (cfg.skip_zero_advantage and row.advantage == 0.0):
                    rows.append(row)
    return rows


def _trajectory_rows(traj: Trajectory, step_adv: list[float], adv: Advantages, g: int, k: int,
                     cfg: SampleConfig) -> list[Sample]:
    rows = []
    for t, step in enumerate(traj.steps):
        row = _row(step, step_adv[t], traj.uid, t, "action", cfg)
        if row is None or (cfg.skip_zero_advantage and row.advantage == 0.0):
            continue
        if adv.token_advantages is not None:
            n_prompt = len(step.prompt_ids)
            row.token_advantages = [0.0] * n_prompt + list(adv.token_advantages[g][k][t])[: len(row.input_ids) - n_prompt]
        if adv.token_returns is not None:
            row.returns = list(adv.token_returns[g][k][t])
        elif adv.returns is not None:
            row.returns = adv.returns[g][k][t]
        rows.append(row)
    return rows
