"""ALFWorld-domain games generated here, offline, from what the `alfworld` package ships.

The `alfworld` wheel carries ALFWorld's PDDL domain (`alfred.pddl`), its text grammar
(`alfred.twl2`), the receptacles and object types of each AI2-THOR floor plan
(`gen/layouts/FloorPlan*-openable.json`, `-objects.json`), which objects go in which receptacles
(`gen/constants.py`) and the goal formulas and phrasings (`gen/goal_library.py`). Only the
per-game problem files (the `json_2.1.1` download) are missing; this module writes them:

    floor plan  →  receptacles (with their navigation poses) and object types
    seeded rng  →  1-3 instances of each object type, each in a receptacle that can hold it
    task type   →  a goal the domain can reach (object, receptacle, lamp), not already true
    → problem text in ALFWorld's `initial_state.pddl` form → `game.tw-pddl` (domain, grammar with
      the goal phrase, problem), played by TextWorld's PDDL engine with ALFWorld's wrappers.

A game is kept only when the PDDL planner solves it (within `PLAN_SECONDS`); its walkthrough is stored
in the game file (`solvable`, `walkthrough`, as `alfworld-generate` does). These are not the official
3,553 / 134 games: figures on them are not comparable with published ALFWorld numbers.

Splits follow ALFRED's scene split: train and dev draw from the training floor plans (7-30,
207-230, 307-330, 407-430; dev with other seeds), test from floor plans never used in train (1-6,
201-206, 301-306, 401-406), like ALFWorld's valid_unseen.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import UserError

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

ROOMS = {"Kitchen": range(1, 31), "LivingRoom": range(201, 231), "Bedroom": range(301, 331),
         "Bathroom": range(401, 431)}
# ALFRED's split of floor plans: the first six of each room type are never used for training.
TEST_PLANS = frozenset(n for r in ROOMS.values() for n in r if n % 100 <= 6)
# The tool each state-changing task type needs, by receptacle type.
TOOLS = {"pick_clean_then_place_in_recep": ("SinkBasin", "BathtubBasin"),
         "pick_heat_then_place_in_recep": ("Microwave",),
         "pick_cool_then_place_in_recep": ("Fridge",)}
ACTION_CLASS = {"pick_clean_then_place_in_recep": "Cleanable", "pick_heat_then_place_in_recep": "Heatable",
                "pick_cool_then_place_in_recep": "Coolable"}
LAMPS = ("DeskLamp", "FloorLamp")
# Where a lamp stands: the lamps are in no receptacle's list in constants.py, but the
# look-at-in-light goal needs the lamp in a receptacle.
LAMP_STANDS = ("SideTable", "Desk", "Dresser", "Shelf", "CoffeeTable", "DiningTable", "TVStand", "Ottoman")
MAX_INSTANCES = 3
MAX_ATTEMPTS = 40


class GenerationError(UserError):
    """The generator cannot make a game of this kind."""


@dataclass(frozen=True)
class Goal:
    task_type: str
    obj: str
    recep: str
    toggle: str = ""


@dataclass(frozen=True)
class Game:
    """One generated game: the problem and what `alfworld-generate` stores beside it."""

    floor_plan: int
    goal: Goal
    problem: str
    task_desc: str
    placements: tuple[tuple[str, str], ...]  # (object id, receptacle id)

    def traj_data(self) -> dict[str, Any]:
        """The fields of ALFRED's traj_data.json that ALFWorld's tools read."""
        g = self.goal
        return {"task_type": g.task_type, "scene": {"floor_plan": f"FloorPlan{self.floor_plan}"},
                "pddl_params": {"object_target": g.obj, "parent_target": g.recep, "toggle_target": g.toggle,
                                "mrecep_target": "", "object_sliced": False},
                "turk_annotations": {"anns": [{"task_desc": self.task_desc}]}}


# ----------------------------------------------------------------------------- package data


def _alfworld():
    try:
        import alfworld.gen.constants as constants
        import alfworld.gen.goal_library as goals
    except ImportError as e:
        raise UserError(f"alfworld-gen needs the alfworld package ({e}): pip install 'stratarl[alfworld]'") from None
    return constants, goals


@cache
def package_file(*parts: str) -> Path:
    constants, _ = _alfworld()
    return Path(constants.__file__).resolve().parents[1].joinpath(*parts)


@cache
def floor_plans() -> tuple[int, ...]:
    layouts = package_file("gen", "layouts")
    return tuple(sorted(int(p.name.split("-")[0][9:]) for p in layouts.glob("FloorPlan*-openable.json")))


def kind(rid: str) -> str:
    """The type of an AI2-THOR id: `Cabinet|+00.68|+00.50|-02.20` → Cabinet, `Sink|…|SinkBasin` → SinkBasin."""
    parts = rid.split("|")
    return parts[4] if len(parts) > 4 else parts[0]


def room_of(plan: int) -> str:
    return next(room for room, r in ROOMS.items() if plan in r)


def plans_for(task_type: str, split: str) -> tuple[int, ...]:
    """Floor plans of `split` whose room type ALFRED allows for `task_type`."""
    constants, _ = _alfworld()
    rooms = constants.GOALS_VALID[task_type]
    test = split == "test"
    return tuple(p for p in floor_plans() if (p in TEST_PLANS) == test and room_of(p) in rooms)


@cache
def scene(plan: int) -> tuple[dict[str, tuple[int, int, int, int]], tuple[str, ...]]:
    """(receptacle id → navigation pose on the 0.25 m grid, object types) of a floor plan."""
    constants, _ = _alfworld()
    static = set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES)
    layouts = package_file("gen", "layouts")
    raw = json.loads((layouts / f"FloorPlan{plan}-openable.json").read_text())
    receps = {rid: (round(x / 0.25), round(z / 0.25), int(rot), int(hor))
              for rid, (x, z, rot, hor) in sorted(raw.items()) if kind(rid) in static}
    types = tuple(sorted(set(json.loads((layouts / f"FloorPlan{plan}-objects.json").read_text()))))
    return receps, types


# ----------------------------------------------------------------------------- sampling


def generate(task_type: str, split: str, seed: int, attempt: int = 0, floor_plan: int = 0,
             max_objects: int = 20) -> Game:
    """The game of (task type, split, seed, attempt): the same arguments give the same game."""
    key = f"{task_type}/{split}/{seed}/{attempt}/{floor_plan}/{max_objects}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    plans = (floor_plan,) if floor_plan else plans_for(task_type, split)
    plan = rng.choice(plans)
    receps, types = scene(plan)
    holders = _pickupable(types, receps)
    goal = _sample_goal(rng, task_type, receps, types, holders)
    if goal is None:
        raise GenerationError(f"FloorPlan{plan} has no {task_type} goal the domain can reach")
    placements = _place(rng, goal, receps, holders, max_objects)
    _, goals = _alfworld()
    template = rng.choice(goals.gdict[task_type]["templates"])
    desc = template.format(obj=goal.obj.lower(), recep=goal.recep.lower(), toggle=goal.toggle.lower(), mrecep="")
    agent = _agent_pose(rng, receps)
    return Game(plan, goal, problem_text(f"gen_{plan}_{seed}_{attempt}", goal, receps, placements, agent),
                desc, tuple(placements))


def _pickupable(types: tuple[str, ...], receps: dict[str, Any]) -> dict[str, list[str]]:
    """Object type → receptacle ids of this scene that can hold it."""
    constants, _ = _alfworld()
    holders: dict[str, list[str]] = {}
    for rid in receps:
        for obj in constants.VAL_RECEPTACLE_OBJECTS.get(kind(rid), ()):
            if obj in types and "Sliced" not in obj:
                holders.setdefault(obj, []).append(rid)
    return holders


def _sample_goal(rng: random.Random, task_type: str, receps: dict[str, Any], types: tuple[str, ...],
                 holders: dict[str, list[str]]) -> Goal | None:
    constants, _ = _alfworld()
    rtypes = sorted({kind(rid) for rid in receps})
    if task_type == "look_at_obj_in_light":
        lamps = [t for t in LAMPS if t in types]
        if not lamps or not any(r in rtypes for r in LAMP_STANDS):
            return None
        obj = rng.choice(sorted(holders))
        return Goal(task_type, obj, "", rng.choice(lamps))
    tools = TOOLS.get(task_type, ())
    if tools and not any(t in rtypes for t in tools):
        return None
    allowed = constants.VAL_ACTION_OBJECTS[ACTION_CLASS[task_type]] if task_type in ACTION_CLASS else None
    options = []
    for obj, where in holders.items():
        if allowed is not None and obj not in allowed:
            continue
        # a goal receptacle type of which the scene has an instance other than the tool itself
        targets = sorted({kind(rid) for rid in where} - set(tools))
        options += [(obj, t) for t in targets if any(kind(r) != t for r in where)]
    if not options:
        return None
    obj, recep = rng.choice(sorted(options))
    return Goal(task_type, obj, recep)


def _place(rng: random.Random, goal: Goal, receps: dict[str, Any], holders: dict[str, list[str]],
           max_objects: int) -> list[tuple[str, str]]:
    """Instances of the goal object's type and of other pickupable types in random order, up to about
    `max_objects`; none of the goal object already where the goal wants it."""
    others = sorted(set(holders) - {goal.obj})
    rng.shuffle(others)
    out: list[tuple[str, str]] = []
    for obj in [goal.obj, *others] if goal.obj else others:
        if len(out) >= max_objects:
            break
        where = [r for r in holders[obj] if not (obj == goal.obj and kind(r) == goal.recep)]
        if not where:
            continue
        low = 2 if (obj == goal.obj and goal.task_type == "pick_two_obj_and_place") else 1
        for i in range(rng.randint(low, MAX_INSTANCES)):
            recep = rng.choice(where)
            out.append((_instance_id(obj, recep, i), recep))
    if goal.toggle:
        stands = [r for r in receps if kind(r) in LAMP_STANDS]
        stand = rng.choice(stands)
        out.append((_instance_id(goal.toggle, stand, 0), stand))
    return out


def _instance_id(obj: str, recep: str, i: int) -> str:
    """An AI2-THOR-style object id (`Apple|+00.68|+00.91|-02.20`) near its receptacle, unique per type."""
    _, x, y, z = recep.split("|")[:4]
    return f"{obj}|{x}|{float(y) + 0.01 * (i + 1):+06.2f}|{z}"


def _agent_pose(rng: random.Random, receps: dict[str, tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    x, z, _, _ = rng.choice(sorted(receps.values()))
    return (x + rng.choice((-2, -1, 1, 2)), z + rng.choice((-2, -1, 1, 2)), rng.choice((0, 90, 180, 270)), 30)


# ----------------------------------------------------------------------------- the problem file

_MANGLE = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}


def mangle(name: str) -> str:
    """An AI2-THOR id as a PDDL name, as ALFWorld writes it (`Apple|+00.68|…` → `Apple_bar__plus_00_dot_68…`)."""
    return "".join(_MANGLE.get(c, c) for c in name)


def _loc(pose: tuple[int, int, int, int]) -> str:
    return mangle("loc|" + "|".join(str(v) for v in pose))


def problem_text(name: str, goal: Goal, receps: dict[str, tuple[int, int, int, int]],
                 placements: list[tuple[str, str]], agent: tuple[int, int, int, int]) -> str:
    """The problem in the form of ALFWorld's `initial_state.pddl`."""
    constants, goals = _alfworld()
    static = sorted(set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES))
    otypes = sorted(set(constants.OBJECTS) - set(static))
    objs = [o for o, _ in placements]
    locations = sorted({_loc(p) for p in receps.values()} | {_loc(agent)})
    rtypes_here = sorted({kind(r) for r in receps})
    otypes_here = sorted({kind(o) for o in objs})
    acts = constants.VAL_ACTION_OBJECTS
    init = [f"(receptacleType {mangle(r)} {kind(r)}Type)" for r in receps]
    init += [f"(objectType {mangle(o)} {kind(o)}Type)" for o in objs]
    init += [f"(canContain {rt}Type {ot}Type)" for rt in rtypes_here for ot in otypes_here
             if ot in constants.VAL_RECEPTACLE_OBJECTS.get(rt, ())]
    init += [f"(pickupable {mangle(o)})" for o in objs if kind(o) not in LAMPS]
    init += [f"(openable {mangle(r)})" for r in receps if kind(r) in constants.OPENABLE_CLASS_LIST]
    init.append(f"(atLocation agent1 {_loc(agent)})")
    for pred, cls in (("cleanable", "Cleanable"), ("heatable", "Heatable"), ("coolable", "Coolable"),
                      ("toggleable", "Toggleable"), ("sliceable", "Sliceable")):
        init += [f"({pred} {mangle(o)})" for o in objs if kind(o) in acts[cls]]
    init += [f"(inReceptacle {mangle(o)} {mangle(r)})" for o, r in placements]
    init += [f"(receptacleAtLocation {mangle(r)} {_loc(p)})" for r, p in receps.items()]
    init += [f"(objectAtLocation {mangle(o)} {_loc(receps[r])})" for o, r in placements]
    goal_text = goals.gdict[goal.task_type]["pddl"].format(obj=goal.obj, recep=goal.recep, toggle=goal.toggle, mrecep="")
    sep = "\n        "
    return (f"\n(define (problem plan_{name})\n(:domain alfred)\n(:objects\nagent1 - agent"
            + "".join(f"{sep}{t}Type - otype" for t in otypes)
            + "".join(f"{sep}{t}Type - rtype" for t in static)
            + "".join(f"{sep}{mangle(o)} - object" for o in objs)
            + "".join(f"{sep}{mangle(r)} - receptacle" for r in receps)
            + "".join(f"{sep}{loc} - location" for loc in locations)
            + f"{sep})\n\n(:init" + "".join(f"{sep}{fact}" for fact in init) + f"{sep})\n"
            + goal_text.replace("#", "-"))


# ----------------------------------------------------------------------------- game files

GEN_VERSION = "v1"  # bump when the generator changes what a (task type, split, seed) makes
SPLIT_SIZES = {"train": 100_000, "dev": 1_000, "test": 1_000}


def game_file_data(game: Game, walkthrough: list[str] | None) -> dict[str, Any]:
    """`game.tw-pddl` as `alfworld-generate` writes it."""
    grammar = package_file("data", "alfred.twl2").read_text().replace("UNKNOWN GOAL", game.task_desc)
    return {"pddl_domain": package_file("data", "alfred.pddl").read_text(), "grammar": grammar,
            "pddl_problem": game.problem, "solvable": walkthrough is not None, "walkthrough": walkthrough}


def write_game(directory: Path, game: Game, walkthrough: list[str] | None) -> Path:
    """Write a game in ALFWorld's on-disk layout: `game.tw-pddl`, `traj_data.json`, `initial_state.pddl`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "initial_state.pddl").write_text(game.problem)
    (directory / "traj_data.json").write_text(json.dumps(game.traj_data()))
    (directory / "game.tw-pddl").write_text(json.dumps(game_file_data(game, walkthrough)))
    return directory / "game.tw-pddl"


PLAN_SECONDS = 60.0  # Fast Downward has no time limit of its own; a few pick-two kitchens search for minutes


def plan_within(path: Path, seconds: float) -> list[str] | None:
    """The planner's walkthrough, computed in a forked child that is killed after `seconds` (then None:
    the attempt counts as unsolvable and the generator draws the next one). A bare `os.fork`, since env
    pool workers are daemonic and may not start `multiprocessing` children."""
    import os
    import select
    import signal

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: plan, write the JSON answer, leave without cleanup handlers
        os.close(read)
        try:
            os.write(write, json.dumps(AlfredPlayer().plan(path)).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        chunks: list[bytes] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and select.select([read], [], [], left)[0]:
            chunk = os.read(read, 1 << 16)
            if not chunk:
                return json.loads(b"".join(chunks) or b"null")
            chunks.append(chunk)
        return None
    finally:
        os.close(read)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):  # still searching: stop it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def game_path(task_type: str, split: str, seed: int, floor_plan: int = 0, max_objects: int = 20) -> Path:
    """The cached, solvable game of (task type, split, seed): generated and checked on first use."""
    from ..models.cache import build_once

    def build(tmp: Path) -> None:
        for attempt in range(MAX_ATTEMPTS):
            try:
                game = generate(task_type, split, seed, attempt, floor_plan, max_objects)
            except GenerationError:
                continue
            plan = plan_within(write_game(tmp, game, None), PLAN_SECONDS)
            if plan:
                write_game(tmp, game, plan)
                return
        raise GenerationError(f"no solvable {task_type} game after {MAX_ATTEMPTS} attempts (split {split}, seed {seed}"
                              + (f", FloorPlan{floor_plan})" if floor_plan else ")"))

    name = f"{task_type}-{split}-{seed}-{floor_plan}-{max_objects}"
    return build_once(name, build, kind=f"alfworld-gen/{GEN_VERSION}", marker="game.tw-pddl") / "game.tw-pddl"


# ----------------------------------------------------------------------------- playing a game file


_TEXTGEN_ORIGINAL: dict[str, Any] = {}


def memoize_textgen(on: bool = True) -> None:
    """Parse each grammar template once. TextWorld's PDDL text generator re-parses the same template strings
    with TatSu on every derivation (every admissible command, every step): ~60% of a step's time in a kitchen.
    The parsed symbols are cached by (text, rule) and deep-copied on use, as a fresh parse returns fresh
    objects, so the derivations are unchanged (tests/envs/test_alfworld_gen.py compares whole episodes)."""
    import copy

    from textworld.envs.pddl import textgen

    original = _TEXTGEN_ORIGINAL.setdefault("parse", textgen._parse_and_convert)
    if not on:
        textgen._parse_and_convert = original
        return

    @cache
    def parsed(text: str, rule_name: str) -> Any:
        return original(text, rule_name=rule_name)

    def parse(text: str, rule_name: str = "symbols", trace: bool = False) -> Any:
        return copy.deepcopy(parsed(text, rule_name))

    textgen._parse_and_convert = parse


class AlfredPlayer:
    """Plays ALFWorld game files (`game.tw-pddl` with `traj_data.json` beside it) through TextWorld's PDDL
    engine and ALFWorld's own wrappers, as `alfworld.agents.environment.AlfredTWEnv` does."""

    def __init__(self, expert: bool = False):
        try:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredExpert, AlfredInfos
            from textworld.envs import PddlEnv
        except ImportError as e:
            raise UserError(f"ALFWorld games need the alfworld and textworld[pddl] packages ({e}): "
                            "pip install 'stratarl[alfworld]'") from None
        if "parse" not in _TEXTGEN_ORIGINAL:
            memoize_textgen()
        infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["walkthrough"])
        env = AlfredInfos(AlfredDemangler(PddlEnv(infos)))
        self._env = AlfredExpert(env) if expert else env
        self._task = ""
        self._moves = 0

    def start(self, path: str | Path) -> tuple[str, dict[str, Any]]:
        self._env.load(str(path))
        state = self._env.reset()
        self._moves = 0
        self._task = state["feedback"].split("Your task is to:")[-1].strip()
        return state["feedback"], self._info(state, True)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        state, _, done = self._env.step(action)
        valid = state["feedback"].strip() != "Nothing happens."
        self._moves += 1
        won = bool(state["won"])
        return state["feedback"], float(won), bool(done), self._info(state, valid)

    def plan(self, path: str | Path) -> list[str] | None:
        """The planner's walkthrough (Fast Downward via TextWorld), or None when it finds none."""
        self._env.load(str(path))
        plan = self._env.reset().get("extra.walkthrough")
        return list(plan) if plan else None

    def handcoded(self, path: str | Path, max_steps: int) -> list[str]:
        """ALFWorld's hand-coded TextWorld expert played to the end (needs `AlfredPlayer(expert=True)`)."""
        self._env.load(str(path))
        state, actions, done = self._env.reset(), [], False
        while not done and len(actions) < max_steps:
            actions.append(state["extra.expert_plan"][0])
            state, _, done = self._env.step(actions[-1])
        return actions if state["won"] else []

    def _info(self, state: Any, valid: bool) -> dict[str, Any]:
        won = bool(state["won"])
        return {"won": won, "score": float(won), "outcome": float(won), "task_description": self._task,
                "moves": self._moves, "action_valid": valid,
                "admissible_actions": list(state["admissible_commands"] or [])}


# ----------------------------------------------------------------------------- the env and its ids


def task_type_of(name: str, seed: int, floor_plan: int = 0) -> str:
    """`all` cycles through the six task types by seed (those ALFRED allows in the floor plan's room, when
    one is named)."""
    if name != "all":
        return name
    constants, _ = _alfworld()
    types = [t for t in TASK_TYPES if not floor_plan or room_of(floor_plan) in constants.GOALS_VALID[t]]
    return types[seed % len(types)]


class AlfredGameEnv:
    """An env over ALFWorld game files: `game_of(task)` names the file (official or generated); the gold agent
    is ALFWorld's hand-coded expert, or the walkthrough stored in the file (`expert="planner"`)."""

    def __init__(self, game_of: Callable[[Any], Path | str], expert: str = "handcoded"):
        self._game_of, self._expert = game_of, expert
        self._player = AlfredPlayer()

    def reset(self, task: Any) -> tuple[str, dict[str, Any]]:
        return self._player.start(self._game_of(task))

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        return self._player.step(action)

    def expert_actions(self, task: Any) -> list[str] | None:
        path = Path(self._game_of(task))
        if self._expert == "planner":
            return list(json.loads(path.read_text())["walkthrough"] or []) or None
        return AlfredPlayer(expert=True).handcoded(path, max_steps=150) or None

    def close(self) -> None:
        self._player = None  # type: ignore[assignment]


def generated_env(name: str, p: dict[str, Any]) -> AlfredGameEnv:
    """`alfworld-gen:<name>`: a generated game per (split, seed), played like an official one."""

    def game_of(task: Any) -> Path:
        task_type = task_type_of(name, task.seed, p["floor_plan"])
        return game_path(task_type, task.split, task.seed, p["floor_plan"], p["max_objects"])

    return AlfredGameEnv(game_of, p["expert"])


def check_floor_plan(name: str, split: str, plan: int) -> None:
    """A floor plan named in the env id must belong to the split (and suit the task type)."""
    if not plan:
        return
    types = TASK_TYPES if name == "all" else (name,)
    allowed = sorted({p for t in types for p in plans_for(t, split)})
    if plan not in allowed:
        side = "a test" if plan in TEST_PLANS else ("a train/dev" if plan in floor_plans() else "no")
        raise UserError(f"floor_plan={plan} is {side} floor plan; alfworld-gen:{name} on split {split} uses "
                        f"{_ranges(allowed)}")


def _ranges(plans: list[int]) -> str:
    out, start = [], None
    for i, p in enumerate(plans):
        start = p if start is None else start
        if i + 1 == len(plans) or plans[i + 1] != p + 1:
            out.append(f"{start}" if start == p else f"{start}-{p}")
            start = None
    return ", ".join(out)


def specs() -> list[Any]:
    from .base import EnvSpec, Param

    params = {
        "floor_plan": Param(int, 0, "one AI2-THOR floor plan (0: sampled from the split's)", 0, 430),
        "max_objects": Param(int, 20, "about how many objects are placed in the scene", 1, 80),
        "expert": Param(str, "handcoded", "gold agent: ALFWorld's hand-coded expert or the PDDL planner",
                        choices=("handcoded", "planner")),
    }

    def seeds(name: str, split: str, p: dict[str, Any]) -> list[int]:
        check_floor_plan(name, split, p["floor_plan"])
        return list(range(SPLIT_SIZES[split]))

    return [
        EnvSpec(id=f"alfworld-gen:{name}", family="alfworld-gen",
                description=f"ALFWorld-domain {'games of the six task types' if name == 'all' else name + ' games'}, "
                            "generated here (not the official ALFWorld split).",
                factory=lambda p, n=name: generated_env(n, p), params=params,
                split_sizes=lambda p: dict(SPLIT_SIZES),
                seeds=lambda split, p, n=name: seeds(n, split, p),
                max_steps=50, outcome="won")
        for name in (*TASK_TYPES, "all")
    ]
