"""ALFWorld and WebShop: adapters over data the user provides.

Neither can be downloaded by stratarl (their game files / product catalogues come from their
authors' download scripts), so each adapter reads a directory named by an environment variable and
says exactly what is missing when it is not there. The adapters use the projects' own Python
packages for the game logic; they are thin, like the TextWorldExpress and ScienceWorld ones.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..types import Task
from .base import EnvSpec, Param

ALFWORLD_VAR = "STRATARL_ALFWORLD_DATA"
WEBSHOP_VAR = "STRATARL_WEBSHOP_DATA"

ALFWORLD_HELP = f"""ALFWorld needs its game files, which stratarl cannot download.
  1. pip install alfworld textworld
  2. ALFWORLD_DATA=/path/to/alfworld-data alfworld-download   (run on a machine with internet)
  3. export {ALFWORLD_VAR}=/path/to/alfworld-data
The directory must contain json_2.1.1/train, json_2.1.1/valid_seen and json_2.1.1/valid_unseen,
with one game.tw-pddl file per task directory."""

WEBSHOP_HELP = f"""WebShop needs its product data and search index, which stratarl cannot download.
  1. git clone https://github.com/princeton-nlp/WebShop and run its setup.sh (internet needed)
  2. export {WEBSHOP_VAR}=/path/to/WebShop     (the checkout, with data/ and search_engine/ built)"""

_ALF_SPLITS = {"train": "train", "dev": "valid_seen", "test": "valid_unseen"}


def _data_dir(var: str, help_text: str, must_have: list[str]) -> Path:
    value = os.environ.get(var)
    if not value:
        raise UserError(f"{var} is not set.\n{help_text}")
    root = Path(value).expanduser()
    missing = [m for m in must_have if not (root / m).exists()]
    if missing:
        raise UserError(f"{var}={root} lacks {', '.join(missing)}.\n{help_text}")
    return root


@cache
def alfworld_games(split: str) -> tuple[str, ...]:
    root = _data_dir(ALFWORLD_VAR, ALFWORLD_HELP, [f"json_2.1.1/{s}" for s in _ALF_SPLITS.values()])
    return tuple(sorted(str(p) for p in (root / "json_2.1.1" / _ALF_SPLITS[split]).rglob("game.tw-pddl")))


def alfworld_env(params: dict[str, Any]):
    """One official ALFWorld text game, played by the same code as the generated ones
    (`alfworld_gen.AlfredGameEnv`: TextWorld's PDDL engine with ALFWorld's wrappers)."""
    from .alfworld_gen import AlfredGameEnv

    alfworld_games("train")  # fail early, with the help text, when the data is absent
    return AlfredGameEnv(lambda task: alfworld_games(task.split)[task.seed])


class WebShopEnv:
    """WebShop's text environment (`web_agent_site.envs.WebAgentTextEnv`) from the user's checkout."""

    def __init__(self, params: dict[str, Any]):
        root = _data_dir(WEBSHOP_VAR, WEBSHOP_HELP, ["web_agent_site", "data"])
        sys.path.insert(0, str(root))
        try:
            from web_agent_site.envs import WebAgentTextEnv
        except ImportError as e:
            raise UserError(f"cannot import WebShop from {root} ({e}).\n{WEBSHOP_HELP}") from None
        self._env = WebAgentTextEnv(observation_mode="text", num_products=params.get("num_products"))

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        obs, _ = self._env.reset(session=task.seed)
        self._goal = self._env.get_instruction_text() if hasattr(self._env, "get_instruction_text") else ""
        return obs, self._info(0.0, True)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        obs, reward, done, _ = self._env.step(action)
        valid = obs is not None and "Invalid action" not in str(obs)
        return str(obs), float(reward), bool(done), self._info(float(reward), valid)

    def expert_actions(self, task: Task) -> None:
        return None

    def close(self) -> None:
        self._env.close()

    def _info(self, reward: float, valid: bool) -> dict[str, Any]:
        actions = self._env.get_available_actions() if hasattr(self._env, "get_available_actions") else {}
        clickables = [f"click[{c}]" for c in actions.get("clickables", [])]
        return {"won": reward >= 1.0, "score": reward, "outcome": reward, "task_description": self._goal,
                "moves": 0, "action_valid": valid, "admissible_actions": clickables}


def specs() -> list[EnvSpec]:
    return [
        EnvSpec(id="alfworld", family="alfworld",
                description=f"ALFWorld household tasks (needs ${ALFWORLD_VAR}).",
                factory=alfworld_env,
                split_sizes=lambda p: {s: len(alfworld_games(s)) for s in _ALF_SPLITS},
                seeds=lambda split, p: list(range(len(alfworld_games(split)))),
                max_steps=50, outcome="won"),
        EnvSpec(id="webshop", family="webshop",
                description=f"WebShop online shopping (needs ${WEBSHOP_VAR}).",
                factory=WebShopEnv,
                params={"num_products": Param(int, 1000, "products loaded from the catalogue", 1, 10**7)},
                split_sizes=lambda p: {"train": 10587, "dev": 1000, "test": 500},
                seeds=lambda split, p: list({"train": range(1500, 12087), "dev": range(500, 1500),
                                             "test": range(0, 500)}[split]),
                has_expert=False, max_steps=15, outcome="score"),
    ]
