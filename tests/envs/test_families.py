"""Real TextWorldExpress and ScienceWorld: gold paths win, tasks are deterministic, and replaying an
action prefix from reset reproduces the state (what MC step values and group rollouts rely on)."""

import random

import pytest

from stratarl.envs import make_env, make_tasks
from stratarl.envs.gold import gold_trajectories, replay

TWX_GAMES = ["cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder"]
INFO_KEYS = {"won", "score", "outcome", "task_description", "moves", "action_valid"}


@pytest.mark.parametrize("game", TWX_GAMES)
def test_twx_gold_wins(game):
    tasks = make_tasks(f"twx:{game}", "test", n=2)
    for traj in gold_trajectories(tasks):
        assert traj.won and traj.outcome == 1.0 and traj.termination == "success"
        assert traj.steps[-1].done and traj.steps[-1].info["score"] == 1.0


@pytest.mark.parametrize("task_name", ["boil", "find-animal"])
def test_sciworld_gold_wins(task_name):
    (traj,) = gold_trajectories(make_tasks(f"sciworld:{task_name}", "dev", n=1))
    assert traj.won and traj.outcome == 1.0


def _random_walk(env, task, n, seed):
    rng = random.Random(seed)
    obs, info = env.reset(task)
    trace, actions = [obs], []
    for _ in range(n):
        acts = info.get("admissible_actions") or ["look around", "inventory", "open door to kitchen",
                                                   "go to kitchen", "pick up thermometer", "look at stove"]
        actions.append(rng.choice(acts))
        obs, reward, done, info = env.step(actions[-1])
        trace.append((obs, reward, done, info["score"]))
        if done:
            break
    return actions, trace


@pytest.mark.parametrize("env_id", ["twx:cookingworld", "twx:coin?numLocations=5", "sciworld:boil"])
def test_same_task_same_state_and_prefix_replay(env_id):
    task = make_tasks(env_id, "train", n=3)[2]
    a, b = make_env(task), make_env(task)
    obs_a, info_a = a.reset(task)
    obs_b, info_b = b.reset(task)
    assert obs_a == obs_b and info_a == info_b
    assert INFO_KEYS <= set(info_a)
    actions, trace = _random_walk(a, task, 12, seed=1)
    # Replaying the prefix from reset on another instance reproduces every observation.
    obs, _ = b.reset(task)
    replayed = [obs]
    for act in actions:
        obs, reward, done, info = b.step(act)
        replayed.append((obs, reward, done, info["score"]))
    assert replayed == trace
    # ... and the same instance after a reset, too (instances are reused across episodes).
    _, trace2 = _random_walk(a, task, 12, seed=1)
    assert trace2 == trace


def test_different_tasks_differ():
    t0, t1 = make_tasks("twx:cookingworld", "train", n=2)
    env = make_env(t0)
    assert env.reset(t0)[0] != env.reset(t1)[0] or env.expert_actions(t0) != env.expert_actions(t1)


def test_gold_replay_records_anchors_and_observations():
    task = make_tasks("twx:coin", "train", n=1)[0]
    env = make_env(task)
    plan = env.expert_actions(task)
    traj = replay(env, task, plan)
    first_obs, _ = env.reset(task)
    assert traj.steps[0].anchor == first_obs
    assert [s.anchor for s in traj.steps[1:]] == [s.observation for s in traj.steps[:-1]]
    assert [s.action for s in traj.steps] == plan


@pytest.mark.parametrize("env_id, index", [("sciworld:boil", 1), ("sciworld:chemistry-mix-paint-secondary-color", 0),
                                           ("twx:cookingworld", 4)])
def test_first_observation_identical_across_loads_and_jvm_restarts(env_id, index):
    """ScienceWorld lists objects in identity-hash order; the adapter's JVM flag makes it stable."""
    from stratarl.envs.jvm import shutdown_all

    task = make_tasks(env_id, "train", n=index + 1)[index]
    env = make_env(task)
    first = [env.reset(task)[0] for _ in range(3)]
    shutdown_all()
    again = make_env(task).reset(task)[0]
    assert first == [again] * 3


def test_sciworld_gold_path_is_reproducible():
    from stratarl.envs.jvm import shutdown_all

    task = make_tasks("sciworld:find-animal", "train", n=1)[0]
    a = make_env(task).expert_actions(task)
    shutdown_all()
    assert make_env(task).expert_actions(task) == a
