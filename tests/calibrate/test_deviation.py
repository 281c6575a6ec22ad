"""Deviation detection (ALGORITHMS.md, STeCa calibration 2) on step values chosen by hand."""

from stratarl.calibrate.deviation import (
    DeviationConfig,
    StepComparison,
    expert_beats_agent,
    first_deviation,
    is_deviation,
)


def cmp(t=2, agent="examine oven", expert="take knife", a=0.25, prev=0.75, e=0.5, won=False):
    return StepComparison(t=t, expert_action=expert, agent_action=agent, agent_value=a, expert_value=e,
                          previous_expert_value=prev, agent_won=won)


def test_all_three_conditions_are_needed():
    cfg = DeviationConfig()
    assert is_deviation(cmp(), cfg)  # 0.25 − 0.75 = −0.5 < δ = 0, different action, continuation failed
    assert not is_deviation(cmp(won=True), cfg)  # the agent's continuation succeeded
    assert not is_deviation(cmp(agent=" Take   KNIFE "), cfg)  # the same action (case, spaces ignored)
    assert not is_deviation(cmp(a=1.0), cfg)  # 1.0 − 0.75 = +0.25: the agent's step is no worse


def test_delta_strictness_and_the_first_checked_step():
    tie = cmp(a=0.5, prev=0.5)  # 0.5 − 0.5 = 0
    assert not is_deviation(tie, DeviationConfig())  # ALGORITHMS.md: < δ
    assert is_deviation(tie, DeviationConfig(inclusive=True))  # the released code: <= δ
    assert is_deviation(cmp(a=0.5, prev=0.25), DeviationConfig(delta=0.5))  # 0.25 < 0.5
    assert not is_deviation(cmp(t=1), DeviationConfig())  # steps 0 and 1 are never checked
    assert is_deviation(cmp(t=1), DeviationConfig(min_step=1))


def test_only_the_first_deviation_counts():
    steps = [cmp(t=5), cmp(t=2, won=True), cmp(t=4), cmp(t=3, a=1.0)]  # t=2 succeeded, t=3 is better
    assert first_deviation(steps, DeviationConfig()).t == 4
    assert first_deviation([cmp(t=2, won=True)], DeviationConfig()) is None


def test_expert_sub_trajectory_margin():
    cfg = DeviationConfig()
    assert expert_beats_agent(cmp(a=0.25, e=0.5), cfg)  # 0.5 − 0.25 = 0.25 > 0.01
    assert not expert_beats_agent(cmp(a=0.5, e=0.5), cfg)
    assert not expert_beats_agent(cmp(a=0.25, e=0.5), DeviationConfig(expert_margin=0.25))  # not strictly above
    assert not expert_beats_agent(cmp(t=1, a=0.0, e=1.0), cfg)  # before the first checked step
