"""Smoke test of configs/strata_smollm2.yaml: the whole pipeline (warm-up SFT, evaluation, one StraTA
iteration with the policy as strategy writer, embedder and judge, evaluation, report) with
SmolLM2-135M-Instruct, shrunk to one tiny iteration."""

import pytest

from stratarl.config import load_config
from stratarl.train.config import TrainConfig
from stratarl.train.logging import read_metrics
from stratarl.train.pipeline import run_training

SHRINK = [
    "iterations=1", "env.tasks_per_iteration=1", "env.train_tasks=4",
    "rollout.group.n_strategies=2", "rollout.group.n_rollouts=1", "rollout.group.candidates=2",
    "rollout.horizon.max_steps=2", "rollout.runner.sampling.strategy_max_tokens=16",
    "warmup.sft.data.tasks=2", "eval.final_episodes=2",
    "logging.tensorboard=false", "logging.progress=false",
]


@pytest.mark.parametrize("model", ["tiny", pytest.param("smollm2-135m", marks=pytest.mark.slow)])
def test_strata_smollm2_config_runs_one_tiny_iteration(tmp_path, request, model):
    """With SmolLM2 itself under `make test-slow` (~45 s); `make test` runs the same config on the tiny model."""
    if model != "tiny":
        request.getfixturevalue("smollm2_path")
    cfg = load_config(TrainConfig, "configs/strata_smollm2.yaml", [*SHRINK, f"out_dir={tmp_path}", f"model={model}"])
    assert cfg.model == model and cfg.strategy.judge.kind == "policy"
    assert cfg.strategy.diversity.embedder == "policy" and cfg.algo.estimator == "strata"
    run = run_training(cfg)
    (row,) = read_metrics(run)
    assert row["rollout/episodes"] == 2 and row["samples/strategy_rows"] == 2
    assert "judge/flagged_fraction" in row and "strategy/similarity_before" in row
    assert (run / "checkpoints" / "sft" / "model.safetensors").is_file()
    assert (run / "eval_before.json").is_file() and (run / "eval_after.json").is_file()
    assert (run / "report.md").is_file()
    assert row["time/iteration"] > 0 or pytest.fail(f"no iteration time in {sorted(row)}")
