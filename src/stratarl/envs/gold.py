"""Gold (expert) trajectories: replay an env's own gold action sequence into `Trajectory` records.

The records have the same schema as model rollouts; their `Turn` fields hold no token ids (no
model produced them), only the action text. SFT tokenizes them with the model's own template.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ..types import Step, Task, Trajectory
from .base import Env
from .registry import get_spec, make_env


def replay(env: Env, task: Task, actions: list[str]) -> Trajectory:
    """Run `actions` from the task's start; the trajectory records every observation."""
    obs, info = env.reset(task)
    traj = Trajectory(task=task, task_uid=task.uid, uid=f"gold:{task.uid}")
    for action in actions:
        anchor = obs
        obs, reward, done, info = env.step(action)
        traj.steps.append(Step(
            prompt_ids=[], response_ids=[], logprobs=[], text=action, action=action, anchor=anchor,
            observation=obs, reward=reward, done=done, valid=bool(info.get("action_valid", True)),
            info={"score": info["score"], "won": info["won"]},
        ))
        if done:
            break
    traj.won = bool(info["won"])
    traj.outcome = float(info["outcome"])
    traj.termination = "success" if traj.won else ("env_done" if traj.steps and traj.steps[-1].done else "max_steps")
    return traj


def random_actions(env: Env, task: Task, n: int, rng: random.Random) -> list[str]:
    """Up to `n` uniformly random admissible actions from the task's start (fewer if it ends)."""
    _, info = env.reset(task)
    actions: list[str] = []
    while len(actions) < n:
        actions.append(rng.choice(sorted(info["admissible_actions"])))
        _, _, done, info = env.step(actions[-1])
        if done:
            break
    return actions


def gold_trajectories(tasks: list[Task]) -> Iterator[Trajectory]:
    """One gold trajectory per task (tasks of one env id), in order."""
    env: Env | None = None
    for task in tasks:
        if env is None:
            if not get_spec(task.env).has_expert:
                from ..errors import UserError

                raise UserError(f"{task.env} has no gold action sequences")
            env = make_env(task)
        actions = env.expert_actions(task) or []
        yield replay(env, task, actions)
