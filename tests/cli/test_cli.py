"""The `stratarl` command as a user runs it: real subprocesses, real environments."""

import subprocess
import sys

import orjson
import pytest

from stratarl.types import Trajectory, from_dict


def run(*args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "stratarl", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def test_envs_lists_both_families():
    r = run("envs")
    assert r.returncode == 0
    assert "twx:cookingworld" in r.stdout and "sciworld:boil" in r.stdout and "twx:peckingorder" in r.stdout


def test_envs_show():
    r = run("envs", "show", "twx:cookingworld?numLocations=4")
    assert r.returncode == 0 and "numLocations" in r.stdout and "train 1000" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["envs", "show", "twx:cookinworld"], "twx:cookingworld"),
    (["envs", "gold", "sciworld:boill", "-n", "1"], "sciworld:boil"),
    (["play", "twx:cookingworld?numLocatons=2"], "numLocations"),
    (["eval", "--agent", "gold", "--env", "twx:coin", "--split", "valid"], "unknown split"),
    (["quickstart", "--config", "no/such.yaml"], "no/such.yaml"),
    (["quickstart", "--config", "configs/quickstart.yaml", "optim.lrr=1"], "optim.lr"),
])
def test_bad_input_is_one_clear_line(args, needle):
    r = run(*args)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr + r.stdout


def test_gold_jsonl_round_trips_and_wins(tmp_path):
    out = tmp_path / "gold.jsonl"
    r = run("envs", "gold", "twx:cookingworld", "--split", "train", "-n", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    trajs = [from_dict(Trajectory, orjson.loads(line)) for line in out.read_bytes().splitlines()]
    assert len(trajs) == 3 and all(t.won for t in trajs)
    assert [t.task.index for t in trajs] == [0, 1, 2]


def test_play_in_the_terminal():
    r = run("play", "twx:coin", "--index", "2", stdin="help\nlook around\nquit\n")
    assert r.returncode == 0, r.stderr
    assert "look around" in r.stdout and "not won after 1 steps" in r.stdout


def test_play_to_a_win():
    from stratarl.envs import make_env, task_at

    task = task_at("twx:coin", "train", 0)
    plan = make_env(task).expert_actions(task)
    r = run("play", "twx:coin", "--index", "0", stdin="\n".join(plan) + "\n")
    assert r.returncode == 0 and "won after" in r.stdout and "not won" not in r.stdout


def test_eval_reference_agents_json():
    r = run("eval", "--agent", "gold", "--env", "twx:coin", "--episodes", "5", "--json")
    assert r.returncode == 0, r.stderr
    rep = orjson.loads(r.stdout)
    assert rep["success_rate"] == 1.0 and rep["terminations"] == {"success": 5}
    r = run("eval", "--agent", "random", "--env", "twx:coin", "--episodes", "5", "--json", "--max-steps", "5")
    rep = orjson.loads(r.stdout)
    assert rep["mean_steps"] <= 5 and rep["episodes"] == 5


def test_bench_envs_json():
    r = run("bench", "envs", "--json", "--steps", "100")
    assert r.returncode == 0, r.stderr
    res = orjson.loads(r.stdout)
    for fam in ("twx", "sciworld"):
        f = res["families"][fam]
        assert f["direct_steps_per_s"] > 0 and f["pool_1x1_steps_per_s"] > 0 and f["pool_overhead"] > 0


def test_quickstart_table_reads_the_run(tmp_path):
    from rich.console import Console

    from stratarl.cli.run import before_after_table

    for name, wins in (("before", 20), ("after", 45)):
        (tmp_path / f"eval_{name}.json").write_bytes(orjson.dumps(
            {"env": "twx:cookingworld", "split": "test", "episodes": 200, "wins": wins, "success_rate": wins / 200,
             "success_ci95": [0.0, 1.0]}))
    console = Console(width=120, record=True)
    console.print(before_after_table(tmp_path))
    out = console.export_text()
    assert "10.0%" in out and "22.5%" in out and "+12.5 pts" in out  # 45/200 - 20/200 = 12.5 points
