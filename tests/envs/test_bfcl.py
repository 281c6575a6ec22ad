"""BFCL multi-turn envs on bfcl-eval's own data, executable backends and state checker: gold replays
score 1, wrong or missing calls fail the turn they belong to, both action syntaxes run, ids resolve."""

from __future__ import annotations

import pytest

from stratarl.envs import bfcl
from stratarl.envs.registry import all_specs, make_env, make_tasks, parse_env_id
from stratarl.errors import UserError

pytestmark = pytest.mark.skipif(not bfcl.available(), reason="bfcl-eval is not installed (pip install --no-deps bfcl-eval)")


def _task(name: str, number: int):
    split = bfcl.split_of(number)
    return next(t for t in make_tasks(f"tools:{name}", split) if t.seed == number)


def _replay(task, actions):
    env = make_env(task)
    env.reset(task)
    out = None
    for a in actions:
        out = env.step(a)
    return out


@pytest.mark.parametrize("name", list(bfcl.CATEGORIES))
def test_gold_replays_score_one_on_several_tasks(name):
    for number in (0, 7, 49, 123, 199):  # 49 of miss-func: its gold calls a function held back until later
        task = _task(name, number)
        obs, reward, done, info = _replay(task, make_env(task).expert_actions(task))
        assert done and reward == 1.0 and info["won"], (name, number, info)
        assert info["turns_passed"] == info["turns"] and info["turn_fraction"] == 1.0


def test_python_syntax_and_json_give_the_same_state():
    # multi_turn_base_0, turn 1: cd(folder='document'), mkdir(dir_name='temp'), mv(...) into temp
    task = _task("bfcl-multi-turn-base", 0)
    gold = make_env(task).expert_actions(task)
    py = ["[cd(folder='document'), mkdir(dir_name='temp')]", "mv(source='final_report.pdf', destination='temp')",
          "answer: moved"] + gold[gold.index("answer: done") + 1:]
    _, reward, done, info = _replay(task, py)
    assert done and reward == 1.0 and info["turns_passed"] == 4


def test_a_wrong_call_fails_its_turn_only():
    # turn 1 of multi_turn_base_0 creates 'tmp' instead of 'temp': the file system state differs from the
    # ground truth's, so that turn fails, and the entry's reward is 0; later turns are still counted.
    task = _task("bfcl-multi-turn-base", 0)
    gold = make_env(task).expert_actions(task)
    bad = [a.replace('"temp"', '"tmp"') if "mkdir" in a else a for a in gold]
    _, reward, done, info = _replay(task, bad)
    assert done and reward == 0.0 and not info["won"]
    assert info["turns_passed"] < info["turns"] and info["turn_fraction"] < 1.0


def test_answering_without_calls_fails_and_steps_run_out():
    task = _task("bfcl-multi-turn-base", 0)
    env = make_env(task)
    obs, info = env.reset(task)
    assert obs.startswith("User turn 1 of 4:") and "final_report.pdf" in obs
    assert '"name": "mkdir"' in info["task_description"]
    obs, reward, done, info = env.step("answer: nothing to do")
    assert obs.startswith("User turn 2 of 4:") and not done and info["turns_passed"] == 0
    env2 = make_env("tools:bfcl-multi-turn-base?max_steps=2")
    env2.reset(task)
    env2.step("ls()")
    _, reward, done, info = env2.step("pwd()")
    assert done and reward == 0.0 and info["turns_passed"] == 0


def test_bad_actions_are_observations_not_crashes():
    task = _task("bfcl-multi-turn-base", 0)
    env = make_env(task)
    env.reset(task)
    obs, _, _, info = env.step("cd(folder=os.getcwd())")  # not a literal: never evaluated
    assert not info["action_valid"] and "literals" in obs
    obs, _, _, info = env.step("no_such_function(x=1)")
    assert info["action_valid"] and "Error during execution" in obs
    obs, _, _, info = env.step('{"name": "cd", "arguments": {"folder": "nowhere"}}')
    assert info["action_valid"] and "nowhere" in obs


def test_miss_func_turn_delivers_the_held_back_docs():
    task = _task("bfcl-multi-turn-miss-func", 0)  # holds back 'sort' until turn 4 (index 3)
    env = make_env(task)
    _, info = env.reset(task)
    assert '"name": "sort"' not in info["task_description"]
    for _ in range(3):
        obs, _, _, info = env.step("answer: ok")
    assert bfcl.ADDED_FUNCTIONS in obs and '"name": "sort"' in obs
    assert '"name": "sort"' in info["task_description"]


def test_ids_resolve_and_splits_partition_the_entries():
    for name in bfcl.CATEGORIES:
        spec, params = parse_env_id(f"tools:{name}?max_steps=30")
        assert spec.id == f"tools:{name}" and params == {"max_steps": 30}
        assert spec.split_sizes(params) == {"train": 120, "dev": 40, "test": 40}
        assert f"tools:{name}" in all_specs()
    with pytest.raises(UserError, match="bfcl-multi-turn-base"):
        parse_env_id("tools:bfcl-multi-turn-bse")


def test_python_call_parser():
    calls = bfcl.parse_python_calls("[sort('a.txt'), tail(file_name='a.txt', lines=20)]")
    assert [(c.name, c.args, c.kwargs) for c in calls] == [("sort", ("a.txt",), {}),
                                                          ("tail", (), {"file_name": "a.txt", "lines": 20})]
    with pytest.raises(ValueError):
        bfcl.parse_python_calls("__import__('os').system('true')")
