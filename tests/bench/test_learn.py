"""`stratarl bench learn` end to end, shrunk: real tiny model, real TextWorldExpress, one shared SFT
checkpoint, the env-step budget, flat variants with N·M rollouts per task, results and curves."""

from pathlib import Path

import orjson
import pytest

from stratarl.bench.learn import LearnBenchConfig, run_learn_bench, summarize
from stratarl.cli import main
from stratarl.errors import UnknownNameError

SHRINK = ["env.tasks_per_iteration=1", "env.train_tasks=8", "rollout.group.n_strategies=2",
          "rollout.group.n_rollouts=2", "rollout.group.candidates=2", "rollout.horizon.max_steps=3",
          "rollout.runner.sampling.max_tokens=8", "rollout.runner.sampling.strategy_max_tokens=8",
          "warmup.sft.data.tasks=2", "warmup.sft.epochs=1", "optim.bf16=off", "engine.hf.dtype=float32"]


def test_bench_learn_shrunk(tmp_path):
    cfg = LearnBenchConfig(variants=["sft", "grpo", "strata"], seeds=1, env_steps=20, eval_episodes=3,
                           out_dir=str(tmp_path), overrides=SHRINK)
    seen = []
    res = run_learn_bench(cfg, on_run=lambda v, s: seen.append((v, s)))
    assert seen == [("sft", 0), ("grpo", 0), ("strata", 0)]  # several seeds: test_summary_statistics_by_hand
    runs = res["runs"]
    assert len({r["variant"] for r in runs}) == 3
    for r in runs:
        assert r["episodes"] == 3
        if r["variant"] == "sft":
            assert r["iterations"] == 0 and r["env_steps"] == 0
        else:  # each iteration: 1 task x 4 episodes x <= 3 steps; stops at the first iteration reaching 20
            assert r["env_steps"] >= 20 and r["env_steps"] - 12 < 20
            assert r["curve"][-1][0] == r["env_steps"] and len(r["curve"]) == r["iterations"]
    grpo = [orjson.loads(line) for line in (tmp_path / "grpo-s0" / "metrics.jsonl").read_bytes().splitlines()]
    strata = [orjson.loads(line) for line in (tmp_path / "strata-s0" / "metrics.jsonl").read_bytes().splitlines()]
    assert grpo[0]["rollout/episodes"] == strata[0]["rollout/episodes"] == 4  # N·M flat = N x M tree
    assert strata[0]["samples/strategy_rows"] == 2 and "samples/strategy_rows" in grpo[0]
    assert grpo[0]["samples/strategy_rows"] == 0
    v = res["variants"]
    assert v["grpo"]["seeds"] == v["sft"]["seeds"] == 1
    assert "judge/flagged_fraction" in strata[0] and "judge/flagged_fraction" not in grpo[0]  # rule judge vs none
    assert set(v["strata"]["stage_seconds_per_iteration"]) >= {"rollout", "judge", "update", "iteration"}
    o = res["strata_overhead_vs_grpo"]
    assert o["per_iteration_median"] > 0
    assert o["per_iteration"] == pytest.approx(v["strata"]["seconds_per_iteration"] / v["grpo"]["seconds_per_iteration"],
                                               rel=0.01)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert orjson.loads((tmp_path / "results.json").read_bytes())["variants"].keys() == v.keys()
    assert (tmp_path / "sft" / "checkpoints" / "sft" / "model.safetensors").is_file()


def test_summary_statistics_by_hand():
    """Two seeds with 1/4 and 3/4 wins: mean 0.5, t-interval clipped to [0, 1], pooled 4/8."""
    from stratarl.bench.learn import RunResult

    runs = [RunResult("grpo", 0, 1, 4, env_steps=10, iterations=2, stage_seconds={"iteration": [1.0, 3.0]}),
            RunResult("grpo", 1, 3, 4, env_steps=30, iterations=2, stage_seconds={"iteration": [2.0, 2.0]})]
    s = summarize(LearnBenchConfig(), Path("x"), runs)["variants"]["grpo"]
    assert s["success_mean"] == 0.5 and s["success_per_seed"] == [0.25, 0.75]
    # sd of (0.25, 0.75) = 0.35355; half-width = 12.706 * 0.35355 / sqrt(2) = 3.1765
    # ... which the summary clips to the range of a rate, [0, 1]
    assert s["success_ci95"] == [0.0, 1.0]
    assert (s["pooled_wins"], s["pooled_episodes"]) == (4, 8)
    assert s["seconds_per_iteration"] == 2.0  # (1+3+2+2) / 4 iterations
    assert s["median_seconds_per_iteration"] == 2.0  # median of 1, 2, 2, 3
    assert s["seconds_per_env_step"] == pytest.approx(8 / 40)


def test_unknown_variant_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "learn", "--variants", "sft,strat"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "strat" in err and "strata" in err and "Traceback" not in err
    with pytest.raises(UnknownNameError):
        run_learn_bench(LearnBenchConfig(variants=["gipo"]))


def test_seed_interval_by_hand():
    """Three seeds at 2/4, 2/4, 3/4: mean 0.5833, sd 0.14434, t(2) = 4.3027, half-width
    4.3027 · 0.14434 / √3 = 0.35856, so [0.2248, 0.9419]; inside [0, 1], nothing clipped."""
    from stratarl.bench.learn import RunResult

    runs = [RunResult("gigpo", i, w, 4) for i, w in enumerate((2, 2, 3))]
    s = summarize(LearnBenchConfig(), Path("x"), runs)["variants"]["gigpo"]
    assert s["success_mean"] == pytest.approx(0.5833, abs=1e-4)
    assert s["success_ci95"] == [pytest.approx(0.2248, abs=2e-4), pytest.approx(0.9419, abs=2e-4)]
    assert s["stage_seconds_per_iteration"] == {} and s["seconds_per_env_step"] == 0.0


def test_one_seed_reports_its_wilson_interval():
    """A single seed (and the SFT-only row) has no spread over seeds: its interval is Wilson's.
    4/100: p = 0.04, z = 1.96, centre (p + z²/200)/(1 + z²/100) = 0.05772, half-width
    z·√(p(1−p)/100 + z²/40000)/(1 + z²/100) = 0.04136, so [0.0157, 0.0984]."""
    from stratarl.bench.learn import RunResult

    s = summarize(LearnBenchConfig(), Path("x"), [RunResult("sft", 0, 4, 100)])["variants"]["sft"]
    assert s["success_mean"] == 0.04
    assert s["success_ci95"] == [pytest.approx(0.0157, abs=1e-4), pytest.approx(0.0984, abs=1e-4)]
    assert s["success_ci95"] == s["pooled_ci95"]
