"""Rule judge labels and the judge audit, on hand-built trajectories."""

import pytest

from stratarl.errors import UnknownNameError
from stratarl.rollout.judge import JudgeConfig, RuleJudge, apply_flags, audit, make_judge, rule_labels
from stratarl.types import Group, Step, Task, Trajectory

TASK = Task(env="twx:coin", split="train", index=0, seed=0)


def _step(anchor, action, obs, reward=0.0, valid=True):
    return Step(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], text=action, action=action, anchor=anchor,
                observation=obs, reward=reward, valid=valid)


def _traj():
    return Trajectory(task=TASK, task_uid=TASK.uid, steps=[
        _step("kitchen", "move east", "pantry"),            # new state, no reward: undecided
        _step("pantry", "dance", "Invalid", valid=False),   # invalid: bad
        _step("pantry", "move west", "kitchen"),            # back to an already seen obs, no reward: bad (no-op)
        _step("kitchen", "move east", "pantry"),            # same (state, action) as step 1: bad (repeat)
        _step("pantry", "take coin", "You take the coin.", reward=1.0),  # reward: good
    ])


def test_rule_labels_by_hand():
    assert rule_labels(_traj()) == ["undecided", "bad", "bad", "bad", "good"]


def test_rule_judge_flags_and_apply():
    g = Group(task=TASK, trajectories=[[_traj(), _traj()]])
    flags = RuleJudge().judge([g])
    assert flags == [[[False, True, True, True, False]] * 2]
    apply_flags([g], flags)
    assert [s.judged for s in g.flat[0].steps] == [False, True, True, True, False]


def test_audit_precision_recall_by_hand():
    g = Group(task=TASK, trajectories=[[_traj()]])
    # a judge that flags steps 1 (undecided), 2 (bad) and 5 (good):
    flags = [[[True, True, False, False, True]]]
    out = audit([g], flags)
    # flagged 3 of 5; decidable bad = {2,3,4}, good = {5}; tp = 1 (step 2), fp among decided = 1 (step 5)
    assert out["judge/flagged_fraction"] == pytest.approx(3 / 5)
    assert out["judge/precision_vs_rule"] == pytest.approx(1 / 2)
    assert out["judge/recall_vs_rule"] == pytest.approx(1 / 3)
    perfect = audit([g], RuleJudge().judge([g]))
    assert perfect["judge/precision_vs_rule"] == 1.0 and perfect["judge/recall_vs_rule"] == 1.0


def test_unknown_judge_named():
    with pytest.raises(UnknownNameError, match="'rule'"):
        make_judge(JudgeConfig(kind="rulez"))  # type: ignore[arg-type]
