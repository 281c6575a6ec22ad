"""Renamed gold replays (`train.sft.SFTDataConfig.rename`): the agent reads and writes a world whose
ingredients carry other names, while the real environment plays the real game underneath.

Why: TextWorldExpress gives each fold its own preparation of each ingredient (chicken leg: grilled in all
train games, roasted in all test games; docs/results.md "TextWorldExpress's folds"), so a warm-up on
train games can score by remembering "chicken leg → toaster" instead of reading the recipe. Renaming an
episode's ingredients to other names drawn from the same training games, consistently in everything the
agent sees (task, observations, admissible actions, strategy) and in the gold actions it is trained to
write, breaks that shortcut: in renamed rows only the recipe and the room say what to take, cut and cook.

A `Lens` is one episode's renaming; `LensPool` is an env pool as the agent behind lenses sees it: its
replies are renamed, the actions it is sent are renamed back before they reach the environment. Nothing
of the environment is simulated: every observation comes from the real game, with names replaced.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..envs.pool import EnvReply
from ..types import Task

TOOLS = frozenset({"knife", "cookbook", "meal"})
"""Things a CookingWorld gold path takes that are not ingredients."""

COOKS = (("roast", "roasted", "oven", "an oven"), ("fry", "fried", "stove", "a stove"),
         ("grill", "grilled", "toaster", "a toaster"))
"""CookingWorld's cooking methods, each as the words that name it: the recipe's verb, the cooked state, the
appliance (`cook X in toaster` grills) and the appliance with its article, as the room describes it."""
CUTS = (("slice", "sliced"), ("chop", "chopped"), ("dice", "diced"))
"""Its cuts: the recipe's verb (also the action's: `slice X with knife`) and the cut state."""
KEEP = ("pork chop",)
"""Names that contain a method's word and stay as they are."""
FURNITURE = {"kitchen cupboard": ("pantry", "cabinet", "wall cabinet", "larder")}
"""Furniture that some folds' kitchens lack, and the names it may be seen under (words CookingWorld never
uses, so the renaming undoes unambiguously): train and dev kitchens have a kitchen cupboard (98%, 100%), test
kitchens never do, so a warm-up that learns to open it loops on an inadmissible action there."""
CONTAINERS = ("fridge", "kitchen cupboard", "cutlery drawer", "dishwasher", "trash can")
"""CookingWorld's kitchen containers. What they hold is a fold's habit too: the knife is in the cutlery
drawer in 65% of train games and 29% of test games."""
ALIASES = FURNITURE["kitchen cupboard"]
"""Container names CookingWorld never uses."""


def taken_entities(plan: Sequence[str]) -> list[str]:
    """What a gold path takes, tools aside, in order (CookingWorld: the recipe's ingredients)."""
    out: list[str] = []
    for action in plan:
        if action.startswith("take "):
            name = action[5:].split(" from ")[0].strip()
            if name and name not in TOOLS and name not in out:
                out.append(name)
    return out


def _substitute(text: str, mapping: dict[str, str]) -> str:
    """Every whole-word occurrence of a key replaced by its value, all at once (longest names first)."""
    if not mapping or not text:
        return text
    names = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    return pattern.sub(lambda m: mapping[m.group(1)], text)


@dataclass(frozen=True)
class Lens:
    """One episode's renaming: `see` is what the agent reads and writes, `unsee` what the env gets."""

    mapping: dict[str, str]
    """Real name -> the name the agent sees."""

    def see(self, text: str) -> str:
        return _substitute(text, self.mapping)

    def unsee(self, text: str) -> str:
        return _substitute(text, {v: k for k, v in self.mapping.items()})


def draw_lens(entities: Sequence[str], vocabulary: Sequence[str], rng: random.Random, context: str = "") -> Lens:
    """Each entity renamed to a different name of `vocabulary`, none of which is an entity of the episode
    or occurs in `context` (the text seen so far), so the renaming can be undone unambiguously. Entities are
    kept when too few names are free."""
    free = [v for v in vocabulary if v not in entities and not re.search(rf"\b{re.escape(v)}\b", context)]
    if len(free) < len(entities):
        return Lens({})
    return Lens(dict(zip(entities, rng.sample(free, len(entities)), strict=True)))


def draw_methods(rng: random.Random) -> dict[str, str]:
    """A mapping that permutes the cooking methods among themselves and the cuts among themselves, each
    method's words together (a grilled dish seen as roasted is cooked in what the agent sees as the
    oven): a bijection, so the agent's actions map back to real ones."""
    mapping = {name: name for name in KEEP}
    for family in (COOKS, CUTS):
        for real, shown in zip(family, rng.sample(family, len(family)), strict=True):
            mapping.update(zip(real, shown, strict=True))
    return mapping


def draw_furniture(rng: random.Random) -> dict[str, str]:
    """A mapping that shows each piece of `FURNITURE` under one of its other names."""
    return {real: rng.choice(names) for real, names in FURNITURE.items()}


def draw_containers(rng: random.Random) -> dict[str, str]:
    """A mapping that shows the kitchen's containers under other names: each real container gets a distinct
    name drawn from `CONTAINERS` and `ALIASES`, so a name says nothing about what it holds or whether the
    kitchen has it (a bijection on the containers: actions map back)."""
    return dict(zip(CONTAINERS, rng.sample(CONTAINERS + ALIASES, len(CONTAINERS)), strict=True))


def draw_view(rng: random.Random, methods: float, furniture: float = 0.0, containers: float = 0.0) -> dict[str, str]:
    """One episode's mapping: methods and cuts permuted with probability `methods` (`draw_methods`), the
    furniture some folds lack renamed with probability `furniture` (`draw_furniture`), the containers renamed
    among themselves with probability `containers` (`draw_containers`, which replaces the furniture's names).
    A zero share draws nothing from `rng`, so adding an option leaves the other draws as they were."""
    mapping: dict[str, str] = {}
    for share, draw in ((methods, draw_methods), (furniture, draw_furniture), (containers, draw_containers)):
        if share > 0 and rng.random() < share:
            mapping.update(draw(rng))
    return mapping


def seen(reply: EnvReply, lens: Lens) -> EnvReply:
    """`reply` as the agent behind `lens` reads it (observation, task text, admissible actions)."""
    info = dict(reply.info)
    if isinstance(info.get("task_description"), str):
        info["task_description"] = lens.see(info["task_description"])
    acts = info.get("admissible_actions")
    if isinstance(acts, list):  # re-sorted when the env sorts them: the order must not tell the real names
        info["admissible_actions"] = [lens.see(a) for a in acts]
        if acts == sorted(acts):
            info["admissible_actions"].sort()
    return dataclasses.replace(reply, observation=lens.see(reply.observation), info=info)


class LensPool:
    """`pool` as seen through per-task lenses (tasks without one are seen as they are)."""

    def __init__(self, pool: Any, lenses: dict[str, Lens]):
        self.pool = pool
        self.lenses = lenses
        self._by_episode: dict[int, Lens] = {}

    def reset(self, tasks: Sequence[Task]) -> list[EnvReply]:
        replies = self.pool.reset(tasks)
        out = []
        for task, reply in zip(tasks, replies, strict=True):
            lens = self.lenses.get(task.uid, Lens({}))
            self._by_episode[reply.episode] = lens
            out.append(seen(reply, lens))
        return out

    def step(self, actions: Sequence[tuple[int, str]]) -> list[EnvReply]:
        lenses = [self._by_episode.get(ep, Lens({})) for ep, _ in actions]
        real = [(ep, lens.unsee(a)) for (ep, a), lens in zip(actions, lenses, strict=True)]
        return [seen(r, lens) for r, lens in zip(self.pool.step(real), lenses, strict=True)]

    def release(self, episodes: Iterable[int]) -> None:
        episodes = list(episodes)
        for ep in episodes:
            self._by_episode.pop(ep, None)
        self.pool.release(episodes)


def renamed(tasks: Sequence[Task], plans: list[list[str]], share: float, rng: random.Random,
            first_observations: Sequence[str], methods: float = 0.0,
            furniture: float = 0.0, containers: float = 0.0) -> tuple[dict[str, Lens], list[list[str]]]:
    """Lenses for a `share` of the tasks (names drawn from what all the plans take) and for `methods`,
    `furniture` and `containers` shares (`draw_view`), and the plans as the agent behind them writes them.
    The draws are independent; a renamed ingredient replaces a kept name."""
    vocabulary = sorted({e for p in plans for e in taken_entities(p)})
    lenses: dict[str, Lens] = {}
    for task, plan, first in zip(tasks, plans, first_observations, strict=True):
        names = draw_lens(taken_entities(plan), vocabulary, rng, first).mapping if share > 0 and rng.random() < share else {}
        swaps = draw_view(rng, methods, furniture, containers)
        if names or swaps:
            shown = set(names.values())
            lenses[task.uid] = Lens({**{k: v for k, v in swaps.items() if k not in shown}, **names})
    return lenses, [[lenses[t.uid].see(a) for a in p] if t.uid in lenses else p for t, p in zip(tasks, plans, strict=True)]
