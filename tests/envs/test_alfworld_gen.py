"""ALFWorld-domain games generated offline (`alfworld-gen:*`): real problems in ALFWorld's format,
played by TextWorld's PDDL engine with ALFWorld's grammar and wrappers; gold agents win; splits by
floor plan; the official on-disk layout plays through the `alfworld` adapter; bad input is a clear error.

The small floor plans pinned here (bathrooms 419 and 402, a few receptacles each) keep a game's load under a
second; kitchens take seconds to ground (docs/environments.md)."""

import json
import re

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from stratarl.envs import alfworld_gen as G  # noqa: E402
from stratarl.envs import make_env, make_tasks  # noqa: E402
from stratarl.envs.gold import gold_trajectories  # noqa: E402
from stratarl.envs.pool import EnvPool  # noqa: E402
from stratarl.errors import UnknownNameError, UserError  # noqa: E402

SMALL = "floor_plan=419"  # a train-split bathroom: sink basins, a bathtub basin, a countertop, a toilet…


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("STRATARL_CACHE", str(tmp_path_factory.getbasetemp() / "alfgen-cache"))


def _facts(problem: str, pred: str) -> list[tuple[str, ...]]:
    return [tuple(m.split()) for m in re.findall(rf"\({pred} ([^()]*)\)", problem)]


def test_generation_is_seeded_and_in_alfworlds_form():
    a = G.generate("pick_clean_then_place_in_recep", "train", 3)
    assert a == G.generate("pick_clean_then_place_in_recep", "train", 3)
    assert a.problem != G.generate("pick_clean_then_place_in_recep", "train", 4).problem
    p = a.problem
    assert "(:domain alfred)" in p and "(atLocation agent1 loc_bar_" in p
    assert f"(objectType ?o {a.goal.obj}Type)" in p and f"(receptacleType ?r {a.goal.recep}Type)" in p
    assert "(isClean ?o)" in p and "#" not in p
    # every object sits in a receptacle whose type can hold it, none of the goal's type where the goal wants it
    p = p.split("(:goal")[0]
    rtype = {r: t for r, t in _facts(p, "receptacleType")}
    otype = {o: t for o, t in _facts(p, "objectType")}
    holds = set(_facts(p, "canContain"))
    for obj, recep in _facts(p, "inReceptacle"):
        assert (rtype[recep], otype[obj]) in holds
        assert not (otype[obj] == f"{a.goal.obj}Type" and rtype[recep] == f"{a.goal.recep}Type")
    assert a.goal.obj in G._alfworld()[0].VAL_ACTION_OBJECTS["Cleanable"]


def test_splits_are_disjoint_floor_plans():
    for task_type in G.TASK_TYPES:
        train, test = set(G.plans_for(task_type, "train")), set(G.plans_for(task_type, "test"))
        assert train and test and not train & test
        assert set(G.plans_for(task_type, "dev")) == train
        assert test <= G.TEST_PLANS
    assert {G.generate("pick_and_place_simple", "test", s).floor_plan for s in range(20)} <= G.TEST_PLANS
    # heat and cool happen in kitchens only, as in ALFRED
    assert all(p <= 30 for p in G.plans_for("pick_heat_then_place_in_recep", "train"))


def test_play_a_generated_game_like_alfworld():
    (task,) = make_tasks(f"alfworld-gen:pick_and_place_simple?{SMALL}", "train", 1)
    env = make_env(task)
    obs, info = env.reset(task)
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert "Your task is to: " in obs and info["task_description"] in obs
    assert any(a.startswith("go to ") for a in info["admissible_actions"])
    obs, reward, done, info = env.step("fly to the moon")
    assert obs == "Nothing happens." and not info["action_valid"] and reward == 0 and not done
    go = sorted(a for a in info["admissible_actions"] if a.startswith("go to "))[0]
    obs, _, _, info = env.step(go)
    assert obs.startswith(f"You arrive at {go[6:]}") and info["action_valid"] and info["moves"] == 2


@pytest.mark.parametrize("expert", ["handcoded", "planner"])
def test_gold_agents_win(expert):
    tasks = make_tasks(f"alfworld-gen:all?{SMALL.replace('419', '402')}&expert={expert}", "test", 2)
    tasks += make_tasks(f"alfworld-gen:pick_two_obj_and_place?{SMALL}&expert={expert}", "train", 1)
    for traj in gold_trajectories(tasks):
        assert traj.won and traj.termination == "success", (traj.task_uid, [s.action for s in traj.steps])


def test_the_game_file_keeps_the_planner_walkthrough():
    path = G.game_path("pick_and_place_simple", "train", 0, floor_plan=419)
    data = json.loads(path.read_text())
    assert data["solvable"] is True and data["walkthrough"] and "UNKNOWN GOAL" not in data["grammar"]
    assert {p.name for p in path.parent.iterdir()} >= {"game.tw-pddl", "traj_data.json", "initial_state.pddl"}


def test_official_layout_plays_through_the_alfworld_adapter(tmp_path, monkeypatch):
    """A generated game written as ALFWorld's json_2.1.1 tree is played by `alfworld` (the official path)."""
    for split, folder in (("train", "train"), ("dev", "valid_seen"), ("test", "valid_unseen")):
        game = G.generate(
            "pick_and_place_simple", split if split != "dev" else "train", 0, floor_plan=0 if split == "test" else 419
        )
        trial = (
            tmp_path
            / "json_2.1.1"
            / folder
            / f"pick_and_place_simple-{game.goal.obj}-None-{game.goal.recep}-{game.floor_plan}"
            / "trial_T0"
        )
        G.write_game(trial, game, None)
    monkeypatch.setenv("STRATARL_ALFWORLD_DATA", str(tmp_path))
    from stratarl.envs import datadir

    datadir.alfworld_games.cache_clear()
    (task,) = make_tasks("alfworld", "train", 1)
    (traj,) = gold_trajectories([task])
    assert traj.won and traj.steps[0].anchor.startswith("-= Welcome to TextWorld, ALFRED! =-")
    datadir.alfworld_games.cache_clear()


def test_bad_input_is_a_clear_error():
    with pytest.raises(UnknownNameError, match="alfworld-gen:pick_and_place_simple"):
        make_tasks("alfworld-gen:pick_and_place", "train", 1)
    with pytest.raises(UserError, match="floor_plan=1 is a test floor plan"):
        make_tasks("alfworld-gen:pick_and_place_simple?floor_plan=1", "train", 1)
    with pytest.raises(UserError, match="floor_plan=419 is a train/dev floor plan"):
        make_tasks("alfworld-gen:pick_and_place_simple?floor_plan=419", "test", 1)
    with pytest.raises(UserError, match="uses 1-6"):
        make_tasks("alfworld-gen:pick_heat_then_place_in_recep?floor_plan=201", "test", 1)
    # a bathroom has no microwave: no heat game can be made there, said in one line
    with pytest.raises(G.GenerationError, match="no solvable pick_heat_then_place_in_recep game"):
        G.game_path("pick_heat_then_place_in_recep", "train", 0, floor_plan=419)


def test_a_game_the_engine_cannot_load_is_an_env_error_episode():
    (task,) = make_tasks(f"alfworld-gen:pick_and_place_simple?{SMALL}", "train", 1, start=1)
    path = G.game_path("pick_and_place_simple", "train", task.seed, floor_plan=419)
    path.write_text(path.read_text().replace("(:domain alfred)", "(:domain alfred"))  # a broken problem
    with EnvPool(num_workers=1) as pool:
        (reply,) = pool.reset([task])
    assert reply.error_kind == "env_error" and reply.error


def test_memoized_text_generation_changes_nothing():
    """The fast path (grammar templates parsed once) against TextWorld's own parse on every derivation:
    a 25-step random walk gives the same observations and admissible commands."""
    import random

    path = G.game_path("pick_and_place_simple", "train", 0, floor_plan=419)

    def walk() -> list:
        player = G.AlfredPlayer()
        obs, info = player.start(path)
        rng, trace = random.Random(0), [obs, info["admissible_actions"]]
        for _ in range(25):
            obs, _, _, info = player.step(rng.choice(info["admissible_actions"]))
            trace += [obs, info["admissible_actions"]]
        return trace

    fast = walk()
    G.memoize_textgen(on=False)
    try:
        plain = walk()
    finally:
        G.memoize_textgen(on=True)
    assert fast == plain and len(fast) == 52


def test_the_planner_is_cut_off_and_answers_in_time(tmp_path):
    """The solvability check's planner runs in a forked child: it answers a small game, and a search that
    outlives its budget is stopped (None: the generator then draws the next attempt)."""
    game = G.generate("pick_and_place_simple", "train", 0, floor_plan=419)
    path = G.write_game(tmp_path, game, None)
    plan = G.plan_within(path, 60.0)
    assert plan and plan[-1].startswith("move ")
    assert G.plan_within(path, 0.001) is None
