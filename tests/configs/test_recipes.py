"""The Qwen2.5 StraTA recipes (configs/recipes/): they load, carry the seed's settings, name a missing
model clearly, and run one shrunken iteration end to end with the tiny model on the CPU (the real
recipes need GPUs: docs/scaling.md#recipes)."""

from pathlib import Path

import pytest

from stratarl.config import load_config
from stratarl.errors import UserError
from stratarl.models import resolve_model
from stratarl.train.config import TrainConfig
from stratarl.train.logging import read_metrics
from stratarl.train.pipeline import run_training

RECIPES = sorted(Path("configs/recipes").glob("strata_qwen2.5-*.yaml"))
SHRINK = [
    "model=tiny", "engine.name=hf", "device=cpu", "iterations=1", "env.tasks_per_iteration=1", "env.workers=1",
    "env.train_tasks=2", "rollout.group.n_strategies=2", "rollout.group.n_rollouts=1", "rollout.group.candidates=2",
    "rollout.horizon.max_steps=2", "rollout.runner.context=2048", "rollout.runner.sampling.max_tokens=8",
    "rollout.runner.sampling.strategy_max_tokens=8", "strategy.judge.max_tokens=4", "eval.final_episodes=0",
    "eval.every=0", "logging.tensorboard=false", "logging.progress=false", "logging.wandb=false",
    "optim.micro_batch_tokens=4096",
]


def test_four_recipes_with_the_seed_settings():
    assert [p.stem for p in RECIPES] == ["strata_qwen2.5-1.5b_sciworld", "strata_qwen2.5-1.5b_twx",
                                         "strata_qwen2.5-7b_sciworld", "strata_qwen2.5-7b_twx"]
    for path in RECIPES:
        cfg = load_config(TrainConfig, path)
        g, s = cfg.rollout.group, cfg.algo.advantage.strata
        assert (g.strategy, g.n_strategies, g.n_rollouts, g.candidates) == (True, 4, 8, 8), path
        assert (s.delta, s.kappa, cfg.algo.estimator) == (0.5, 0.1, "strata"), path
        assert cfg.engine.name == "vllm" and cfg.strategy.judge.kind == "policy", path
        assert cfg.lora.enabled == ("7b" in path.stem), path
        assert cfg.env.id.startswith("sciworld:" if "sciworld" in path.stem else "twx:"), path


def test_a_missing_model_directory_is_named():
    cfg = load_config(TrainConfig, RECIPES[0])
    with pytest.raises(UserError, match="Qwen2.5-1.5B-Instruct"):
        resolve_model(cfg.model)


@pytest.mark.parametrize("recipe", ["strata_qwen2.5-1.5b_sciworld", "strata_qwen2.5-7b_twx"])
def test_recipe_runs_one_shrunken_iteration(tmp_path, tiny_path, recipe):
    cfg = load_config(TrainConfig, f"configs/recipes/{recipe}.yaml", [*SHRINK, f"out_dir={tmp_path}"])
    (row,) = read_metrics(run_training(cfg))
    assert row["rollout/episodes"] == 2 and row["samples/strategy_rows"] == 2
    assert "judge/flagged_fraction" in row and "strategy/similarity_before" in row


def test_recipes_ask_no_split_for_more_tasks_than_it_holds():
    """ScienceWorld's dev/test splits hold a few variations per task (sciworld:boil: 7 and 9)."""
    from stratarl.envs.registry import check_task_counts

    for path in RECIPES:
        cfg = load_config(TrainConfig, path)
        e = cfg.eval
        check_task_counts((cfg.env.id, e.split, e.episodes, 0), (cfg.env.id, e.split, e.final_episodes, 0))
