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
    (["envs", "list"], "No such command 'list'"),  # typer's own usage errors too
    (["eval", "--bogus"], "No such option: --bogus"),
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
    """TextWorldExpress only, one worker (ScienceWorld's pool is exercised in tests/envs)."""
    r = run("bench", "envs", "--json", "--steps", "100", "--families", "twx", "--workers", "1")
    assert r.returncode == 0, r.stderr
    res = orjson.loads(r.stdout)
    assert list(res["families"]) == ["twx"]
    f = res["families"]["twx"]
    assert f["direct_steps_per_s"] > 0 and f["pool_1x1_steps_per_s"] > 0 and f["pool_overhead"] > 0


def test_bench_envs_unknown_family_names_the_choices():
    r = run("bench", "envs", "--families", "twx,sciwrld")
    assert r.returncode == 2 and "sciworld" in r.stderr and "Traceback" not in r.stderr


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


@pytest.mark.parametrize("args, needle", [
    (["sft", "model=tiny", "data.tasks=1500"], "twx:cookingworld has only 1000 train tasks; asked for 1500"),
    (["train", "model=tiny", "eval.final_episodes=20", "env.id=sciworld:boil"], "sciworld:boil has only 9 test tasks"),
    (["calibrate", "tasks=2", "eval.episodes=1001"], "has only 1000 test tasks; asked for 1001"),
    (["autocoa", "gold.tasks=401"], "search:synthkb has only 400 train tasks"),
])
def test_overrides_alone_run_on_the_defaults_and_splits_are_not_overdrawn(tmp_path, capsys, args, needle):
    """No YAML file: the first `key=value` is an override (it used to be read as a missing config file);
    asking a split for more tasks than it holds stops the run before it starts, in one line."""
    from stratarl.cli.main import main

    with pytest.raises(SystemExit) as e:
        main([*args, f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Traceback" not in err and "not found" not in err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def sft_last(tmp_path_factory):
    """`stratarl sft` with overrides only: chat-mode prompts and strategies, one gold episode."""
    from stratarl.cli.main import main

    out = tmp_path_factory.mktemp("sft")
    main(["sft", "model=tiny", "data.env=twx:coin", "data.tasks=1", "data.strategies=true", "prompt.mode=chat",
          "max_steps=3", "epochs=1", "workers=1", "bf16=off", f"out_dir={out}"])
    return out / "sft" / "checkpoints" / "last"


def test_eval_of_checkpoints_last_uses_the_format_it_was_trained_with(sft_last, capsys):
    from stratarl.cli.main import main
    from stratarl.config import load_config
    from stratarl.train.config import TrainConfig

    train = load_config(TrainConfig, overrides=[f"model={sft_last}"])  # RL from it talks the same way
    assert train.rollout.runner.prompt.mode == "chat" and train.rollout.group.strategy
    main(["eval", str(sft_last), "--env", "twx:coin", "--episodes", "1", "--max-steps", "1", "--workers", "1",
          "--no-strategy", "--json"])
    rep = orjson.loads(capsys.readouterr().out)
    assert rep["episodes"] == 1 and rep["agent"] == f"model:{sft_last}"
    fmt = rep["format"]
    assert fmt["prompt"]["mode"] == "chat" and fmt["strategy"] is False
    assert fmt["source"] == f"from checkpoint {sft_last}; strategy set explicitly"
