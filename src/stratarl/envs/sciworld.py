"""ScienceWorld (Wang et al., 2022): 30 elementary-science task types on the JVM.

Each instance is one `PythonInterface` object on this process's shared ScienceWorld JVM. Splits
map onto each task's own train/dev/test variations. `score` is the game's 0-100 score divided by
100; the episode reward is that score clipped at 0 (ScienceWorld reports -100 on a failed task).
When an input matches several actions, ScienceWorld asks which one was meant; we answer with the
first option (as AgentGym does), so one agent action is always one env step.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ..errors import UserError
from ..types import Task
from .base import EnvSpec, Param, sanitize_action
from .jvm import get_jvm

SIMPLIFICATIONS = ("easy", "teleportAction", "selfWateringFlowerPots", "openContainers", "openDoors",
                   "noElectricalAction")

PARAMS = {
    "simplifications": Param(str, "", "comma-separated ScienceWorld simplifications, e.g. 'easy'"),
    "admissible": Param(int, 0, "put the (long) list of valid actions in info each step", 0, 1),
}


def task_names() -> list[str]:
    from scienceworld.constants import TASKS
    return [t["task_name"] for t in TASKS]


class SciWorldEnv:
    """One ScienceWorld game instance (see module docstring)."""

    def __init__(self, task_name: str, params: dict[str, Any]):
        self.task_name = task_name
        self.simplifications = str(params.get("simplifications", ""))
        self.admissible = bool(params.get("admissible", 0))
        _check_simplifications(self.simplifications)
        self._server = get_jvm("sciworld").jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self._last_score = 0
        self._description = ""

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        if task.env != f"sciworld:{self.task_name}":
            raise ValueError(f"this env runs sciworld:{self.task_name}, not {task.env}")
        self._server.load(self.task_name, task.seed, self.simplifications, False)
        self._last_score = 0
        self._description = _strip_prefix(str(self._server.freeActionTaskDesc()))
        return str(self._server.freeActionLook()), self._info(valid=True)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        obs = str(self._server.step(sanitize_action(action)))
        if obs.startswith("Ambiguous request"):
            obs = str(self._server.step("0"))
        raw = int(round(100 * self._server.getScore()))
        reward = (raw - self._last_score) / 100.0
        self._last_score = raw
        done = bool(self._server.getCompleted()) or raw < 0
        valid = not obs.startswith("No known action matches")
        return obs, reward, done, self._info(valid)

    def expert_actions(self, task: Task) -> list[str]:
        gold = get_jvm("sciworld").jvm.scienceworld.runtime.pythonapi.PythonInterface()
        gold.load(self.task_name, task.seed, self.simplifications, True)
        return [str(a) for a in gold.getGoldActionSequence()]

    def close(self) -> None:
        self._server = None

    def _info(self, valid: bool) -> dict[str, Any]:
        score = self._last_score / 100.0
        info: dict[str, Any] = {
            "won": self._last_score >= 100,
            "score": score,
            "outcome": max(score, 0.0),
            "task_description": self._description,
            "moves": int(self._server.getNumMoves()),
            "action_valid": valid,
        }
        if self.admissible:
            info["admissible_actions"] = sorted(str(a) for a in self._server.getValidActionObjectCombinations())
        return info


def _strip_prefix(text: str) -> str:
    return text.replace("Task Description:", "").strip()


def _check_simplifications(text: str) -> None:
    for s in filter(None, text.split(",")):
        if s not in SIMPLIFICATIONS:
            raise UserError(f"unknown ScienceWorld simplification '{s}'; valid: {', '.join(SIMPLIFICATIONS)}")


@cache
def _variations(task_name: str, split: str) -> tuple[int, ...]:
    server = get_jvm("sciworld").jvm.scienceworld.runtime.pythonapi.PythonInterface()
    server.load(task_name, 0, "", False)
    getter = {"train": server.getVariationsTrain, "dev": server.getVariationsDev,
              "test": server.getVariationsTest}[split]
    return tuple(int(v) for v in getter())


def specs() -> list[EnvSpec]:
    from scienceworld.constants import TASKS
    out = []
    for t in TASKS:
        name = t["task_name"]
        out.append(EnvSpec(
            id=f"sciworld:{name}", family="sciworld",
            description=f"ScienceWorld {t['task_id']}: {t['topic']} / {t['task']}.",
            factory=lambda p, n=name: SciWorldEnv(n, p), params=PARAMS,
            split_sizes=lambda p, n=name: {s: len(_variations(n, s)) for s in ("train", "dev", "test")},
            seeds=lambda split, p, n=name: list(_variations(n, split)),
            max_steps=50, outcome="score",
        ))
    return out
