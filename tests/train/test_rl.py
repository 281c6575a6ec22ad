"""The RL driver with the real tiny model on real TextWorldExpress: end to end, exact resume, each stage."""

import math
import os

import orjson
import pytest
import torch
from safetensors.torch import load_file

from stratarl.agent.format import read_format
from stratarl.config import load_config
from stratarl.errors import UserError
from stratarl.train.config import TrainConfig
from stratarl.train.logging import read_metrics
from stratarl.train.pipeline import run_training

SMALL = {
    "env": {"id": "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0", "tasks_per_iteration": 2,
            "train_tasks": 20},
    "rollout": {"group": {"n_rollouts": 2}, "horizon": {"max_steps": 3},
                "runner": {"sampling": {"max_tokens": 8}, "prompt": {"history": 1}}},
    "optim": {"lr": 1e-3, "bf16": "off"}, "engine": {"hf": {"dtype": "float32"}},
    "logging": {"tensorboard": False, "progress": False},
}


def _cfg(tmp_path, name, **over):
    data = {**SMALL, "name": name, "out_dir": str(tmp_path), **over}
    return load_config(TrainConfig, data=data)


def _strip(rows):
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows]


def test_grpo_trains_end_to_end(tmp_path):
    run = run_training(_cfg(tmp_path, "grpo", iterations=2, logging={**SMALL["logging"], "tensorboard": True}))
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == [0, 1]
    assert all(r["train/steps"] == 1 and r["rollout/episodes"] == 4 for r in rows)
    assert (run / "checkpoints" / "2" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    assert os.readlink(run / "checkpoints" / "last") == "2"
    assert read_format(run / "checkpoints" / "last").prompt.history == 1  # the run's own format
    assert (run / "trajectories" / "1.jsonl").is_file() and list((run / "tb").iterdir())
    assert (run / "report.md").is_file() and (run / "curves.png").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "2")  # plain HF format
    AutoTokenizer.from_pretrained(run / "checkpoints" / "2")
    with pytest.raises(UserError, match="already holds a run"):
        run_training(_cfg(tmp_path, "grpo", iterations=1))


def test_resume_equals_uninterrupted(tmp_path):
    over = {"dynamic_sampling": {"enabled": True, "max_rounds": 2, "min_std": -1.0},
            "optim": {**SMALL["optim"], "minibatches": 2, "epochs": 2}}
    straight = run_training(_cfg(tmp_path, "straight", iterations=4, **over))
    run_training(_cfg(tmp_path, "pieces", iterations=2, **over))
    resumed = run_training(_cfg(tmp_path, "pieces", iterations=4, **over), resume=True)
    a = load_file(straight / "checkpoints" / "4" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "4" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _strip(read_metrics(straight)) == _strip(read_metrics(resumed))
    for it in range(4):
        assert (straight / "trajectories" / f"{it}.jsonl").read_bytes() == (resumed / "trajectories" / f"{it}.jsonl").read_bytes()


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        run_training(_cfg(tmp_path, "none", iterations=1), resume=True)


@pytest.mark.parametrize("estimator", ["gigpo", "step_gae", "gae", "rloo"])
def test_other_estimators_run(tmp_path, estimator):
    run = run_training(_cfg(tmp_path, estimator, iterations=1, algo={"estimator": estimator}))
    (row,) = read_metrics(run)
    assert row["train/steps"] == 1 and math.isfinite(row["train/policy_loss"])
    if estimator in ("step_gae", "gae"):  # gae: per-token values of padded rows (once an IndexError)
        assert row["train/value_loss"] > 0


def test_strata_with_judge_and_diversity(tmp_path):
    run = run_training(_cfg(tmp_path, "strata", iterations=1, algo={"estimator": "strata"},
                            rollout={**SMALL["rollout"], "group": {"strategy": True, "n_strategies": 2, "n_rollouts": 2,
                                                                   "candidates": 2}},
                            strategy={"judge": {"kind": "rule"}}))
    (row,) = read_metrics(run)
    assert row["samples/strategy_rows"] == 4 and "judge/flagged_fraction" in row
    assert "strategy/similarity_before" in row
    line = (run / "trajectories" / "0.jsonl").read_bytes().splitlines()[0]
    assert orjson.loads(line)["strategy"]["response_ids"]


def test_rl_behind_lenses_shows_every_episode_of_a_task_the_same_renamed_kitchen(tmp_path):
    """`env.methods` and `env.containers`: the agent plays train games behind lenses (the containers under
    names drawn per task and iteration, some never used by the game), the real game underneath; the episodes
    of one task see the same kitchen."""
    from stratarl.rollout.rename import ALIASES

    run = run_training(_cfg(tmp_path, "lens", iterations=1, env={**SMALL["env"], "methods": 1.0, "containers": 1.0}))
    trajs = [orjson.loads(line) for line in (run / "trajectories" / "0.jsonl").read_bytes().splitlines()]
    firsts: dict[str, set] = {}
    for t in trajs:
        firsts.setdefault(t["task_uid"], set()).add(t["steps"][0]["anchor"])
    assert len(trajs) == 4 and all(len(v) == 1 for v in firsts.values())
    assert any(a in f for v in firsts.values() for f in v for a in ALIASES)


def test_non_finite_updates_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    """An estimator that returns NaN: every update is skipped (weights untouched), and after
    `max_bad_updates` in a row the run stops with a message and a `last_good` checkpoint."""
    from stratarl.algos import advantages as A
    from stratarl.models import resolve_model

    def nan_estimator(groups, cfg, values=None):
        adv = A.grpo(groups, cfg)
        adv.steps = [[[float("nan")] * len(t) for t in g] for g in adv.steps]
        return adv

    monkeypatch.setitem(A.ESTIMATORS, "nan_test", nan_estimator)
    cfg = _cfg(tmp_path, "nan", iterations=5, algo={"estimator": "nan_test"},
               optim={**SMALL["optim"], "max_bad_updates": 3})
    with pytest.raises(UserError, match="3 non-finite updates in a row"):
        run_training(cfg)
    rows = read_metrics(tmp_path / "nan")
    assert [r["train/skipped"] for r in rows] == [1, 1, 1]
    good = load_file(tmp_path / "nan" / "checkpoints" / "last_good" / "model.safetensors")
    start = load_file(resolve_model("tiny") / "model.safetensors")
    assert all(torch.equal(good[k], start[k]) for k in start)


def test_separate_critic(tmp_path):
    run = run_training(_cfg(tmp_path, "sep", iterations=1, algo={"estimator": "step_gae"}, critic={"kind": "separate"}))
    (row,) = read_metrics(run)
    assert row["train/value_loss"] > 0 and row["train/steps"] == 1
