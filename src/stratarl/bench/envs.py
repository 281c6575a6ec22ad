"""`stratarl bench envs`: env steps/s per family, in-process and through the EnvPool, in one run.

Workloads (fixed and seeded, so runs are comparable):
- TextWorldExpress `twx:cookingworld`: uniformly random admissible actions, episodes cut at 30 steps;
- ScienceWorld `sciworld:boil`: the gold action sequences of train variations, replayed;
- ALFWorld-domain `alfworld-gen:pick_and_place_simple` (TextWorld's PDDL engine): random admissible
  actions, episodes cut at 30 steps; every reset loads and grounds a game (cached after first use).
Measured: `direct` (one env in this process), `pool_1x1` (one worker, one episode: the pool's
per-step overhead), `pool_1x8` (one worker, 8 episodes stepped as a batch: what a rollout sees with
the default worker count on 2 cores) and `pool_Wx8` (W workers, 8 episodes). Ratios:
`pool_overhead` = direct / pool_1x1 time per step, `pool_speedup` = best pooled / direct steps/s.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import orjson
from rich.console import Console
from rich.table import Table

from ..envs.pool import EnvPool
from ..envs.registry import make_env, make_tasks
from ..types import Task

WORKLOADS = {"twx": "twx:cookingworld", "sciworld": "sciworld:boil", "alfworld-gen": "alfworld-gen:pick_and_place_simple"}
RANDOM_ACTORS = ("twx", "alfworld-gen")
# steps per measurement relative to `steps`: ScienceWorld is ~20x slower per step than TWX, ALFWorld's PDDL engine ~100x
STEP_SHARE = {"twx": (1, 1), "sciworld": (100, 4), "alfworld-gen": (60, 10)}
EPISODE_CAP = 30


@dataclass
class _Slot:
    task: Task
    info: dict = field(default_factory=dict)
    gold: list[str] = field(default_factory=list)
    moves: int = 0


class _Actor:
    """Picks the next action of a slot: random admissible (TWX, ALFWorld) or the next gold action."""

    def __init__(self, family: str, seed: int = 0):
        self.family, self.rng = family, random.Random(seed)

    def __call__(self, slot: _Slot) -> str:
        if self.family in RANDOM_ACTORS:
            return self.rng.choice(slot.info["admissible_actions"])
        return slot.gold[slot.moves] if slot.moves < len(slot.gold) else "look around"

    def finished(self, slot: _Slot, done: bool) -> bool:
        cap = EPISODE_CAP if self.family in RANDOM_ACTORS else len(slot.gold)
        return done or slot.moves >= cap


def _tasks_and_gold(family: str, n: int) -> tuple[list[Task], dict[str, list[str]]]:
    tasks = make_tasks(WORKLOADS[family], "train", n=n)
    gold: dict[str, list[str]] = {}
    if family == "sciworld":
        env = make_env(tasks[0])
        gold = {t.uid: env.expert_actions(t) for t in tasks}
        env.close()
    return tasks, gold


def _run(pool: EnvPool, actor: _Actor, tasks: list[Task], gold: dict, steps: int, concurrent: int) -> float:
    """Keep `concurrent` episodes going until `steps` env steps were taken; returns steps/s."""
    done_steps, k = 0, 0
    open_: dict[int, _Slot] = {}
    t0 = time.perf_counter()
    while done_steps < steps:
        new = [tasks[(k + i) % len(tasks)] for i in range(concurrent - len(open_))]
        k += len(new)
        for task, r in zip(new, pool.reset(new), strict=True):
            open_[r.episode] = _Slot(task, r.info, gold.get(task.uid, []))
        replies = pool.step([(e, actor(s)) for e, s in open_.items()])
        for r in replies:
            slot = open_[r.episode]
            slot.info, slot.moves = r.info, slot.moves + 1
            if r.error or actor.finished(slot, r.done):
                pool.release([r.episode])
                del open_[r.episode]
        done_steps += len(replies)
    elapsed = time.perf_counter() - t0
    pool.release(list(open_))
    return done_steps / elapsed


def _measure(family: str, steps: int, workers: int, concurrent: int) -> float:
    """Steps/s of one configuration; `workers=0` is the direct, in-process baseline. Every
    configuration first runs a quarter of its steps untimed, so each JVM is equally warm (JIT)."""
    tasks, gold = _tasks_and_gold(family, 8)
    with EnvPool(num_workers=workers) as pool:
        _run(pool, _Actor(family, seed=1), tasks, gold, max(50, steps // 4), concurrent)
        return _run(pool, _Actor(family), tasks, gold, steps, concurrent)


def run_env_bench(steps: int = 600, workers: int = 2, families: tuple[str, ...] = ("twx", "sciworld")) -> dict:
    out: dict = {"workers": workers, "steps_per_measurement": steps, "families": {}}
    for family in families:
        least, share = STEP_SHARE[family]
        n = max(least, steps // share) if share > 1 else steps
        direct = _measure(family, n, workers=0, concurrent=1)
        pool_1x1 = _measure(family, n, workers=1, concurrent=1)
        pool_1x8 = _measure(family, n, workers=1, concurrent=8)
        pool_wx8 = _measure(family, n, workers=workers, concurrent=8) if workers > 1 else pool_1x8
        out["families"][family] = {
            "env": WORKLOADS[family], "steps": n,
            "direct_steps_per_s": round(direct, 1),
            "pool_1x1_steps_per_s": round(pool_1x1, 1),
            "pool_1x8_steps_per_s": round(pool_1x8, 1),
            f"pool_{workers}x8_steps_per_s": round(pool_wx8, 1),
            "pool_overhead": round(direct / pool_1x1, 2),
            "pool_speedup": round(max(pool_1x8, pool_wx8) / direct, 2),
        }
    return out


def print_results(results: dict, as_json: bool, console: Console) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    w = results["workers"]
    table = Table(title="env steps/s (higher is better)")
    for col in ("family", "env", "direct", "pool 1x1", "pool 1x8", f"pool {w}x8", "overhead (direct/1x1)",
                "speedup (best pool/direct)"):
        table.add_column(col)
    for fam, r in results["families"].items():
        table.add_row(fam, r["env"], f"{r['direct_steps_per_s']:.0f}", f"{r['pool_1x1_steps_per_s']:.0f}",
                      f"{r['pool_1x8_steps_per_s']:.0f}", f"{r[f'pool_{w}x8_steps_per_s']:.0f}",
                      f"{r['pool_overhead']:.2f}x", f"{r['pool_speedup']:.2f}x")
    console.print(table)
