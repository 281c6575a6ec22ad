"""D_c, D_s, D_e: weights, the D_e filter, rows, and the weighted objective, with numbers worked out by hand.

The action texts are chosen so that TF-IDF gives cos 1 (identical) or 0 (no shared word): every nDTW
below is then exact, e.g. [look around, take knife, eat meal] vs [look around, open fridge, take knife,
eat meal] has DTW 1 and nDTW 1/√(3² + 4²) = 0.2 (see test_ndtw.py)."""

import pytest
import torch

from stratarl.algos.losses import PreferenceConfig, steca_sft_loss
from stratarl.calibrate.datasets import (
    calibrated_set,
    count_samples,
    expert_set,
    explored_set,
    steca_datasets,
    steca_rows,
)
from stratarl.calibrate.deviation import DeviationConfig, StepComparison
from stratarl.calibrate.step_value import ExpertScan
from stratarl.calibrate.trajectories import CalibratedTrajectory
from stratarl.rollout.diversity import TfidfEmbedder
from stratarl.types import Step, Task, Trajectory

TASK = Task(env="twx:cookingworld", split="train", index=0, seed=0)
EXPERT = ["look around", "take knife", "eat meal"]
DETOUR = ["look around", "open fridge", "take knife", "eat meal"]


def traj(actions, uid, won=False):
    steps = [Step(prompt_ids=[10 * i + 1, 10 * i + 2], response_ids=[10 * i + 3], logprobs=[0.0], text=a, action=a)
             for i, a in enumerate(actions)]
    return Trajectory(task=TASK, steps=steps, won=won, outcome=float(won), uid=uid)


def comparison(t, agent, a, e):
    return StepComparison(t=t, expert_action=EXPERT[t], agent_action=agent, agent_value=a, expert_value=e,
                          previous_expert_value=0.5, agent_won=False)


def scan(explored0):
    # explored[2]: the agent at the expert prefix of length 2 took "open fridge" and went on with "eat meal"
    explored = [explored0, None, traj(EXPERT[:2] + ["open fridge", "eat meal"], "x2")]
    return ExpertScan(expert=traj(EXPERT, "expert"), explored=explored, expert_values=[None] * 3,
                      agent_values=[None] * 3, comparisons=[comparison(2, "open fridge", a=0.25, e=0.75)])


def test_explored_successes_are_weighted_down_and_filtered():
    pref = PreferenceConfig()
    same = explored_set([scan(traj(EXPERT, "x0", won=True))], TfidfEmbedder(), pref)
    assert len(same) == 1 and same[0].ndtw == pytest.approx(0.0, abs=1e-12) and same[0].weight == pytest.approx(1.0)
    assert same[0].first_step == 0 and same[0].kind == "explored"
    # nDTW 0.2 >= 0.013: dropped; with the threshold raised it is kept at w = 1 − 0.01·0.2 = 0.998
    assert explored_set([scan(traj(DETOUR, "x0", won=True))], TfidfEmbedder(), pref) == []
    kept = explored_set([scan(traj(DETOUR, "x0", won=True))], TfidfEmbedder(), PreferenceConfig(steca_explored_max_ndtw=0.5))
    assert kept[0].ndtw == pytest.approx(0.2) and kept[0].weight == pytest.approx(0.998)
    assert explored_set([scan(traj(EXPERT, "x0", won=False))], TfidfEmbedder(), pref) == []  # failures never


def test_expert_sub_trajectories_where_the_expert_is_better():
    # step 2: expert "eat meal" (value 0.75) vs agent "open fridge" (0.25): 0.5 > 0.01, kept from step 2.
    # nDTW([eat meal], [open fridge, eat meal]): D = [[1, 0]], C = [[1, 1]] -> 1/√(1 + 4); w = 1 + 0.01·that
    out = expert_set([scan(None)], DeviationConfig(), TfidfEmbedder(), PreferenceConfig())
    assert len(out) == 1 and out[0].kind == "expert" and out[0].first_step == 2
    assert out[0].ndtw == pytest.approx(1 / 5 ** 0.5) and out[0].weight == pytest.approx(1 + 0.01 / 5 ** 0.5)
    s = scan(None)
    s.comparisons = [comparison(2, "open fridge", a=0.75, e=0.75)]
    assert expert_set([s], DeviationConfig(), TfidfEmbedder(), PreferenceConfig()) == []


def test_calibrated_samples_and_rows():
    # calibrated path: look around, take knife, [deviated] open fridge, [reflection] eat meal;
    # trained from step 3; contrasted with the agent's own continuation [look around, take knife, eat meal]
    cal_traj = traj(EXPERT[:2] + ["open fridge", "eat meal"], "cal")
    dev = comparison(2, "open fridge", a=0.25, e=0.75)
    cal = CalibratedTrajectory(trajectory=cal_traj, deviation=dev, reflection="r", source="template",
                               agent_continuation=["look around", "take knife", "eat meal"])
    (d_c,) = calibrated_set([cal], TfidfEmbedder(), PreferenceConfig())
    # nDTW([eat meal], [look around, take knife, eat meal]): D = [[1, 1, 0]] -> C = [[1, 2, 2]] -> 2/√10
    assert d_c.first_step == 3 and d_c.ndtw == pytest.approx(2 / 10 ** 0.5)
    assert d_c.weight == pytest.approx(1 + 0.02 / 10 ** 0.5)
    everything = steca_datasets([scan(traj(EXPERT, "x0", won=True))], [cal], DeviationConfig(), TfidfEmbedder(),
                                PreferenceConfig())
    assert [w.kind for w in everything] == ["calibrated", "expert", "explored"]
    rows = steca_rows(everything)
    # D_c: step 3 only; D_s: step 2 only; D_e: steps 0, 1, 2
    assert [(r.uid.split(":")[0], r.step_index) for r in rows] == [
        ("calibrated", 3), ("expert", 2), ("explored", 0), ("explored", 1), ("explored", 2)]
    assert rows[0].input_ids == [31, 32, 33] and rows[0].loss_mask == [0, 0, 1]
    assert [r.weight for r in rows] == [d_c.weight, everything[1].weight, 1.0, 1.0, 1.0]
    assert count_samples(rows) == 3


def test_weighted_objective_by_hand_and_under_micro_batching():
    # two samples cut into three rows: rows 0 and 1 belong to sample A (w = 1.002), row 2 to sample B (w = 0.998)
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -1.5, -3.0], [-4.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    w = torch.tensor([1.002, 1.002, 0.998])
    # A: 1.002·(1 + 2 + 1.5 + 3) = 7.515; B: 0.998·1 = 0.998; mean over S = 2 samples: 4.2565
    assert steca_sft_loss(logp, mask, w, total_samples=2).item() == pytest.approx(4.2565)
    parts = sum(steca_sft_loss(logp[i:i + 1], mask[i:i + 1], w[i:i + 1], total_samples=2) for i in range(3))
    assert parts.item() == pytest.approx(4.2565)
    assert steca_sft_loss(logp, mask, torch.ones(3), total_samples=1).item() == pytest.approx(8.5)
