"""What `stratarl train` checks before it spends time: the RL tasks from `env.train_start` fit the split."""

import pytest

from stratarl.config import load_config
from stratarl.errors import SplitSizeError
from stratarl.train.config import TrainConfig
from stratarl.train.pipeline import check_splits


def _cfg(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, "configs/quickstart.yaml", list(overrides))


def test_rl_tasks_after_the_warmup_tasks_fit_the_split():
    check_splits(_cfg("env.train_start=500", "env.train_tasks=500"))
    with pytest.raises(SplitSizeError, match="asked for 600 from index 500: ask for at most 500"):
        check_splits(_cfg("env.train_start=500", "env.train_tasks=600"))
    with pytest.raises(SplitSizeError, match="asked to start at 1000"):
        check_splits(_cfg("env.train_start=1000"))


def test_in_training_evaluations_are_checked_against_their_own_split():
    check_splits(_cfg("eval.every=1", "eval.every_split=dev", "eval.episodes=1000"))
    with pytest.raises(SplitSizeError, match="1000 dev tasks; asked for 1001"):
        check_splits(_cfg("eval.every=1", "eval.every_split=dev", "eval.episodes=1001"))


def test_a_second_identical_warmup_comes_from_the_cache(tmp_path, monkeypatch):
    """The first run trains and stores its warm-up; a second run of the same warm-up copies it (same
    weights, same stats) without training; another SFT setting misses the cache."""
    from stratarl.models import cache
    from stratarl.train import pipeline

    for module in (pipeline, cache):  # the lookup (pipeline) and the atomic store (models.cache.build_once)
        monkeypatch.setattr(module, "cache_root", lambda: tmp_path / "cache")
    trained = []
    real = pipeline._train_warmup
    monkeypatch.setattr(pipeline, "_train_warmup", lambda cfg, console=None: trained.append(cfg.name) or real(cfg, console))
    small = ["warmup.sft.data.tasks=4", "warmup.sft.epochs=1", f"out_dir={tmp_path}"]
    first = pipeline.warmup_sft(_cfg(*small, "name=a"))
    second = pipeline.warmup_sft(_cfg(*small, "name=b"))
    assert trained == ["a"] and second == tmp_path / "b" / "checkpoints" / "sft"
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert (tmp_path / "a" / "sft.json").read_bytes() == (tmp_path / "b" / "sft.json").read_bytes()
    pipeline.warmup_sft(_cfg(*small, "name=c", "warmup.sft.lr=1e-3"))
    assert trained == ["a", "c"]
