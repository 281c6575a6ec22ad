"""`stratarl bench tools-reward`: the pure aggregation with hand-checked numbers, and a tiny real run
(tiny model, real tools:seed env and sandbox; slow)."""

from __future__ import annotations

import pytest

from stratarl.bench.tools_reward import (
    EpisodeStats,
    Point,
    RewardRun,
    ToolsRewardBenchConfig,
    episode_stats,
    f1_of,
    point,
    run_tools_reward_bench,
    variant_summary,
    with_reward,
)
from stratarl.errors import UnknownNameError, UserError
from stratarl.types import Step, Task, Trajectory


def _step(action: str, info: dict) -> Step:
    return Step(prompt_ids=[1], response_ids=[2], logprobs=[-0.1], text=action, action=action, info=info)


def test_episode_stats_counts_env_calls_but_not_answers_or_rejected_steps():
    task = Task(env="tools:seed", split="test", index=0, seed=0)
    steps = [_step('{"name": "a", "arguments": {}}', {"score": 0.0, "won": False}),
             _step("", {}),  # rejected by the runner (never reached the env): not a call
             _step("not json", {"score": 0.0, "won": False}),  # reached the env: the env counts it as a call
             _step("answer: Paris", {"score": 0.4, "won": True})]
    traj = Trajectory(task=task, steps=steps, outcome=0.4, won=True)
    assert episode_stats(traj) == EpisodeStats(calls=2, f1=0.4, won=True)
    # ended by the runner on a rejected step: the env's last score still counts (outcome would be 0)
    cut = Trajectory(task=task, steps=steps[:3] + [_step("", {})], outcome=0.0, won=False)
    assert episode_stats(cut) == EpisodeStats(calls=2, f1=0.0, won=False)


def test_f1_recovered_from_recall_or_precision():
    # n = 2 sub-questions, c = 4 calls, n̂ = 1 solved: recall 1/2, precision 1/4,
    # F1 = 2·(1/4)(1/2)/(1/4 + 1/2) = (1/4)/(3/4) = 1/3 (ε = 1e-6 moves it by < 1e-6)
    assert f1_of("recall", 0.5, 2, 4) == pytest.approx(1 / 3, abs=1e-6)
    assert f1_of("precision", 1 / (4 + 1e-6), 2, 4) == pytest.approx(1 / 3, abs=1e-6)
    assert f1_of("f1", 0.7, 2, 4) == 0.7
    assert f1_of("recall", 0.0, 2, 3) == 0.0  # nothing solved: F1 is 0


def test_point_and_variant_summary_by_hand():
    p = point([EpisodeStats(2, 0.5, True), EpisodeStats(4, 0.0, False), EpisodeStats(0, 1.0, True)])
    # calls (2+4+0)/3 = 2, F1 (0.5+0+1)/3 = 0.5, success 2/3
    assert (p.episodes, p.calls, p.f1) == (3, 2.0, 0.5) and p.success == pytest.approx(2 / 3)
    assert point([]) == Point(0, 0.0, 0.0, 0.0)
    runs = [RewardRun("recall", 0, curve=[Point(4, 1.0, 0.2, 0.0), Point(4, 3.0, 0.4, 0.5)],
                      heldout=Point(2, 2.0, 0.5, 0.5), heldout_f1_per_episode=[0.0, 1.0]),
            RewardRun("recall", 1, curve=[Point(4, 2.0, 0.4, 0.0), Point(4, 5.0, 0.2, 0.5)],
                      heldout=Point(2, 4.0, 0.25, 0.0), heldout_f1_per_episode=[0.5, 0.0])]
    s = variant_summary(runs)
    # held-out means over seeds: calls (2+4)/2 = 3, F1 (0.5+0.25)/2 = 0.375, success 0.25, episodes 2+2
    assert s["heldout"] == {"episodes": 4, "calls": 3.0, "f1": 0.375, "success": 0.25}
    # training calls per iteration, mean over seeds: it 0 (1+2)/2 = 1.5, it 1 (3+5)/2 = 4
    assert s["train_calls_first_last"] == [1.5, 4.0] and s["seeds"] == 2
    lo, hi = s["heldout_f1_ci95"]  # t-interval around the mean F1 of [0, 1, 0.5, 0] = 0.375
    assert lo < 0.375 < hi


def test_with_reward_sets_the_parameter_and_rejects_other_envs():
    assert with_reward("tools:seed?high=0&reward=recall", "f1") == "tools:seed?reward=f1&high=0"
    assert with_reward("tools:seed", "precision") == "tools:seed?reward=precision"
    with pytest.raises(UserError, match="twx:cookingworld"):
        with_reward("twx:cookingworld", "f1")


def test_unknown_variant_names_the_choices():
    cfg = ToolsRewardBenchConfig(variants=["recal"])
    with pytest.raises(UnknownNameError, match="recall"):
        run_tools_reward_bench(cfg)


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    cfg = ToolsRewardBenchConfig(
        variants=["recall"], iterations=1, eval_episodes=2, out_dir=str(tmp_path),
        overrides=["warmup.sft.data.tasks=2", "warmup.sft.epochs=1", "env.tasks_per_iteration=1",
                   "rollout.group.n_rollouts=2", "rollout.horizon.max_steps=2",
                   "rollout.runner.sampling.max_tokens=16"])
    res = run_tools_reward_bench(cfg)
    v = res["variants"]["recall"]
    assert len(v["train_curve"]) == 1 and v["train_curve"][0]["episodes"] == 2
    assert v["heldout"]["episodes"] == 2 and 0.0 <= v["heldout"]["f1"] <= 1.0
    assert 0.0 <= v["heldout"]["calls"] <= 2.0  # at most the 2-step horizon
    assert res["sft_heldout"]["episodes"] == 2 and (tmp_path / "results.json").is_file()
