"""Trajectories on disk: `runs/<name>/trajectories/<iteration>.jsonl`, one `Trajectory` per line.

Every field of the record is written (token ids included), so a file loads back into the exact
records; `regroup` rebuilds the Groups (task -> strategies -> rollouts) from the ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from ..types import Group, Trajectory, from_dict, to_json


def iteration_path(run_dir: str | Path, iteration: int | str) -> Path:
    return Path(run_dir) / "trajectories" / f"{iteration}.jsonl"


def write_trajectories(path: str | Path, trajs: list[Trajectory]) -> Path:
    """Write atomically (temp file, then rename) so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        for t in trajs:
            f.write(to_json(t) + b"\n")
    os.replace(tmp, path)
    return path


def write_groups(run_dir: str | Path, iteration: int | str, groups: list[Group]) -> Path:
    return write_trajectories(iteration_path(run_dir, iteration), [t for g in groups for t in g.flat])


def read_trajectories(path: str | Path) -> list[Trajectory]:
    return [from_dict(Trajectory, orjson.loads(line)) for line in Path(path).read_bytes().splitlines() if line]


def regroup(trajs: list[Trajectory]) -> list[Group]:
    """Groups in order of first appearance; strategies in order of first appearance per task."""
    groups: dict[str, Group] = {}
    slots: dict[str, dict[str, int]] = {}
    for t in trajs:
        g = groups.get(t.task_uid)
        if g is None:
            g = groups[t.task_uid] = Group(task=t.task)
            slots[t.task_uid] = {}
        key = t.strategy_uid
        if key not in slots[t.task_uid]:
            slots[t.task_uid][key] = len(g.trajectories)
            g.trajectories.append([])
            if t.strategy is not None:
                g.strategies.append(t.strategy)
        g.trajectories[slots[t.task_uid][key]].append(t)
    return list(groups.values())
