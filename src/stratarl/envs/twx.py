"""TextWorldExpress (Jansen & Côté, 2022): eight procedurally generated text games on the JVM.

Each instance is one `PythonInterface` object on this process's shared TWX JVM. Splits map onto
TWX's own seed folds (train 0-999, dev 10000-10999, test 20000-20999). The episode reward is 1
when the game reports success, else 0; `score` is the game's own 0..1 progress.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from ..types import Task
from .base import EnvSpec, Param, sanitize_action
from .jvm import get_jvm

_BIN = dict(type=int, low=0, high=1)

GAMES: dict[str, tuple[str, dict[str, Param], int]] = {
    "cookingworld": (
        "Cook a meal: find the recipe, gather and prepare ingredients (TWX CookingWorld).",
        {
            "numLocations": Param(int, 3, "rooms in the house", 1, 11),
            "numIngredients": Param(int, 2, "ingredients in the recipe", 1, 5),
            "numDistractorItems": Param(int, 2, "irrelevant items", 0, 10),
            "includeDoors": Param(doc="rooms separated by doors that must be opened", default=0, **_BIN),
            "limitInventorySize": Param(doc="limit on carried items", default=0, **_BIN),
        },
        40,
    ),
    "twc": (
        "Tidy up: put objects in their commonsense locations (TextWorld-Commonsense).",
        {
            "numLocations": Param(int, 1, "rooms", 1, 3),
            "numItemsToPutAway": Param(int, 2, "objects to put away", 1, 10),
            "includeDoors": Param(doc="rooms separated by doors", default=0, **_BIN),
            "limitInventorySize": Param(doc="limit on carried items", default=0, **_BIN),
        },
        30,
    ),
    "coin": (
        "Explore the house and take the coin (Coin Collector).",
        {
            "numLocations": Param(int, 3, "rooms", 1, 11),
            "numDistractorItems": Param(int, 0, "irrelevant items", 0, 10),
            "includeDoors": Param(doc="rooms separated by doors", default=0, **_BIN),
            "limitInventorySize": Param(doc="limit on carried items", default=0, **_BIN),
        },
        30,
    ),
    "mapreader": (
        "Read a map, fetch the coin from a named room and bring it back (Map Reader).",
        {
            "numLocations": Param(int, 8, "rooms (fewer than ~6 with maxDistanceApart 3 fails for some seeds)", 1, 50),
            "maxDistanceApart": Param(int, 3, "max rooms between start and coin", 1, 8),
            "maxDistractorItemsPerLocation": Param(int, 0, "irrelevant items per room", 0, 3),
            "includeDoors": Param(doc="rooms separated by doors", default=0, **_BIN),
            "limitInventorySize": Param(doc="limit on carried items", default=0, **_BIN),
        },
        30,
    ),
    "arithmetic": ("Solve a math problem, then pick the item with that quantity.", {}, 20),
    "sorting": ("Put objects in the box in order of quantity.", {}, 20),
    "simonsays": (
        "Do exactly what Simon says.",
        {
            "gameLength": Param(int, 5, "number of instructions", 1, 100),
            "numDistractors": Param(int, 2, "distractor actions", 0, 10),
            "memorization": Param(doc="instructions given all at once up front", default=0, **_BIN),
        },
        20,
    ),
    "peckingorder": ("Read an instruction book and follow its steps in order.", {}, 20),
}

FOLDS = {"train": "train", "dev": "dev", "test": "test"}


class TwxEnv:
    """One TextWorldExpress game instance (see module docstring)."""

    def __init__(self, game: str, params: dict[str, Any]):
        self.game = game
        self.params = params
        self._server = get_jvm("twx").jvm.textworldexpress.runtime.PythonInterface()
        self._server.load(game, _param_str(params))
        self._last_score = 0.0
        self._moves = 0
        self._task_description = ""

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        if task.env != f"twx:{self.game}":
            raise ValueError(f"this env runs twx:{self.game}, not {task.env}")
        raw = self._server.generateNewGameJSON(task.seed, FOLDS[task.split], False)
        self._last_score, self._moves = 0.0, 0
        self._task_description = str(self._server.getTaskDescription())
        obs, info, _ = self._parse(raw)
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        self._moves += 1
        obs, info, failed = self._parse(self._server.stepJSON(sanitize_action(action)))
        reward = info["score"] - self._last_score
        self._last_score = info["score"]
        done = info["won"] or failed or info["score"] >= 1.0
        return obs, reward, done, info

    def expert_actions(self, task: Task) -> list[str]:
        gold = get_jvm("twx").jvm.textworldexpress.runtime.PythonInterface()
        gold.load(self.game, _param_str(self.params))
        try:
            gold.generateNewGameJSON(task.seed, FOLDS[task.split], True)
        except Exception as e:  # noqa: BLE001 - a Java-side generator failure for this seed
            first = str(e).split("\n")[1] if "\n" in str(e) else str(e)
            raise RuntimeError(f"TextWorldExpress could not make a gold path for {task.uid}: {first}") from None
        return list(gold.getGoldActionSequence())

    def close(self) -> None:
        self._server = None

    def _parse(self, raw: str) -> tuple[str, dict[str, Any], bool]:
        r = orjson.loads(raw)
        obs = r["observation"]
        valid = not obs.startswith("Unknown action")
        info = {
            "won": bool(r["tasksuccess"]),
            "score": float(r["score"]),
            "outcome": 1.0 if r["tasksuccess"] else 0.0,
            "task_description": self._task_description,
            "moves": self._moves,
            "action_valid": valid,
            "admissible_actions": sorted(r["validActions"]),
        }
        return obs, info, bool(r["taskfailure"])


def _param_str(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in sorted(params.items()))


@cache
def _seeds(split: str) -> tuple[int, ...]:
    server = get_jvm("twx").jvm.textworldexpress.runtime.PythonInterface()
    server.load("coin", "")
    getter = {"train": server.getSeedsTrain, "dev": server.getSeedsDev, "test": server.getSeedsTest}[split]
    return tuple(int(s) for s in getter())


def specs() -> list[EnvSpec]:
    out = []
    for game, (desc, params, horizon) in GAMES.items():
        out.append(EnvSpec(
            id=f"twx:{game}", family="twx", description=desc,
            factory=lambda p, g=game: TwxEnv(g, p), params=params,
            split_sizes=lambda p: {s: len(_seeds(s)) for s in FOLDS},
            seeds=lambda split, p: list(_seeds(split)),
            max_steps=horizon, outcome="won",
        ))
    return out
