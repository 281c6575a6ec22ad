"""The one-file StraTA reference (examples/strata_minimal.py): short, importing no driver, its inline
advantages equal to the package's estimator, and a real run on the tiny model, deterministic per seed."""

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from stratarl.algos.advantages import AdvantageConfig, strata
from stratarl.models import load_model, resolve_model
from stratarl.types import Group, Step, Task, Trajectory, Turn

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "strata_minimal.py"
SMALLEST = "--iterations 1 --tasks 1 --n-strategies 2 --n-rollouts 2 --max-steps 2".split()


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("strata_minimal", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_example_is_one_short_file_without_the_driver():
    text = EXAMPLE.read_text()
    assert len(text.splitlines()) <= 300
    imported = set(re.findall(r"^from (stratarl[\w.]*) import", text, re.MULTILINE))
    allowed = {"stratarl.agent.parse", "stratarl.agent.prompts", "stratarl.algos.losses", "stratarl.engines",
               "stratarl.envs", "stratarl.models", "stratarl.types"}  # records, pure functions, constructors
    assert imported <= allowed, imported
    assert "Departures from the paper" in text


# -- inline advantages vs the registered estimator -------------------------------------------------

TASK = Task(env="twx:cookingworld", split="train", index=0, seed=0)


def _traj(outcome: float, penalties: list[float], judged: list[bool] | None = None) -> Trajectory:
    judged = judged or [False] * len(penalties)
    steps = [Step(prompt_ids=[1], response_ids=[2], logprobs=[0.0], text="", penalty=p, judged=j)
             for p, j in zip(penalties, judged, strict=True)]
    return Trajectory(task=TASK, steps=steps, outcome=outcome)


def _turn() -> Turn:
    return Turn(prompt_ids=[1], response_ids=[2], logprobs=[0.0], text="<strategy>x</strategy>")


def test_top_delta_strategy_reward_by_hand(ex):
    assert ex.top_delta_strategy_reward([1.0, 0.0, 0.0]) == 0.5  # ⌈0.5·3⌉ = 2: mean(1, 0)
    assert ex.top_delta_strategy_reward([0.2, 0.8, 0.4, 0.6]) == pytest.approx(0.7)  # top 2 of 4
    assert ex.top_delta_strategy_reward([0.3]) == 0.3


def test_inline_advantages_equal_the_package_estimator(ex):
    g = Group(task=TASK, strategies=[_turn(), _turn()], trajectories=[
        [_traj(1.0, [0.0]), _traj(0.0, [0.0]), _traj(0.0, [0.0])],  # R = 1, 0, 0 -> R(z_0) = 0.5
        [_traj(0.0, [0.0, 0.0], [True, False]), _traj(0.0, [0.1, 0.0]), _traj(0.0, [0.0])],  # R(z_1) = 0
    ])
    equal = Group(task=TASK, strategies=[_turn(), _turn()],  # every return −0.4: no signal anywhere
                  trajectories=[[_traj(0.0, [0.1] * 4) for _ in range(2)] for _ in range(2)])
    mine, theirs = ex.strata_advantages([g, equal]), strata([g, equal], AdvantageConfig())
    # by hand: strategy rewards (0.5, 0): mean 0.25, std √(2·0.25²) = 0.353553 -> ±0.25 / 0.353553
    assert mine.strategies[0] == pytest.approx([0.7071048, -0.7071048], rel=1e-6)
    # strategy 0's step rows (1, 0, 0): mean 1/3, std √(1/3) -> (2/3)/0.57735 = 1.1547, −0.57735 twice
    assert [row[0] for row in mine.steps[0][:3]] == pytest.approx([1.1547, -0.57735, -0.57735], abs=1e-4)
    assert mine.steps[0][3][0] < mine.steps[0][3][1]  # the judged step pays κ
    assert mine.strategies[1] == [0.0, 0.0] and all(a == 0.0 for row in mine.steps[1] for a in row)
    for a, b in zip(mine.strategies, theirs.strategies, strict=True):
        assert a == pytest.approx(b, abs=1e-9)
    for a, b in zip(mine.steps, theirs.steps, strict=True):
        assert len(a) == len(b) and all(x == pytest.approx(y, abs=1e-9) for x, y in zip(a, b, strict=True))


# -- a real run ------------------------------------------------------------------------------------


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_main_trains_and_is_deterministic(ex, monkeypatch):
    real_judge = ex.self_judge

    def judge_then_flag(engine, tok, groups, descriptions):
        # The random-init tiny model never writes a valid action, so every return is equal and every
        # advantage 0; one verdict on one step gives the update something to learn from.
        real_judge(engine, tok, groups, descriptions)
        groups[0].flat[0].steps[0].judged = True

    monkeypatch.setattr(ex, "self_judge", judge_then_flag)
    (first,), model_a = ex.main(SMALLEST)
    (second,), model_b = ex.main(SMALLEST)
    assert first == second  # same seed, same samples, same update
    a, b = _weights(model_a), _weights(model_b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isfinite(first.loss) and math.isfinite(first.reward) and 0.0 <= first.success <= 1.0
    assert first.nonzero_advantages > 0
    assert first.mismatch < 1e-4  # trained on the engine's own token ids (re-tokenizing would show here)
    fresh = _weights(load_model(resolve_model("tiny")))
    assert any(not torch.equal(fresh[k], a[k]) for k in fresh)


def test_no_signal_no_update(ex):
    (stats,), model = ex.main(SMALLEST + ["--seed", "1"])
    assert stats.nonzero_advantages == 0 and stats.loss == 0.0
    fresh, trained = _weights(load_model(resolve_model("tiny"))), _weights(model)
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh)  # zero advantages move nothing
