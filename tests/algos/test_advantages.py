"""Every estimator against numbers worked out by hand (the arithmetic is in the comments)."""

import dataclasses
import math

import pytest

from stratarl.algos.advantages import (
    AdvantageConfig,
    anchor_groups,
    assign,
    compute_advantages,
    strategy_reward,
)
from stratarl.errors import UnknownNameError
from stratarl.types import Group, Step, Task, Trajectory, Turn

TASK = Task(env="twx:coin", split="train", index=0, seed=0)
S = 1 / math.sqrt(2)  # 0.707107: normalising two different values always gives +-1/sqrt(2)


def traj(outcome, n=1, penalties=(), judged=(), anchors=None, rewards=None, termination="success"):
    steps = []
    for i in range(n):
        steps.append(Step(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], text="", action="a",
                          anchor=(anchors or [f"s{i}"] * n)[i], penalty=dict(penalties).get(i, 0.0),
                          judged=i in judged, reward=(rewards or [0.0] * n)[i]))
    return Trajectory(task=TASK, steps=steps, outcome=outcome, won=outcome == 1, termination=termination)


def group(*trajs, strategies=None):
    if strategies is None:
        return Group(task=TASK, trajectories=[list(trajs)])
    turns = [Turn(prompt_ids=[1], response_ids=[2], logprobs=[0.0], text=f"s{i}") for i in range(len(strategies))]
    return Group(task=TASK, strategies=turns, trajectories=[list(ts) for ts in strategies])


def cfg(**kw):
    base = AdvantageConfig()
    sections = {k: v for k, v in kw.items() if isinstance(v, dict)}
    flat = {k: v for k, v in kw.items() if not isinstance(v, dict)}
    for name, opts in sections.items():
        flat[name] = dataclasses.replace(getattr(base, name), **opts)
    return dataclasses.replace(base, **flat)


def per_traj(adv, g=0):
    return [row[0] for row in adv.steps[g]]


def test_grpo_by_hand():
    # R = [1,0,0,1]: mean .5, unbiased std sqrt(4 * .25 / 3) = .57735 -> A = +-.5/.57735 = +-.866025
    a = compute_advantages("grpo", [group(traj(1), traj(0), traj(0), traj(1))], cfg())
    assert per_traj(a) == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], abs=1e-5)
    two_steps = compute_advantages("grpo", [group(traj(1, n=2), traj(0, n=3))], cfg())
    assert two_steps.steps[0] == [pytest.approx([S, S], abs=1e-5), pytest.approx([-S] * 3, abs=1e-5)]


def test_grpo_degenerate_groups():
    single = compute_advantages("grpo", [group(traj(1))], cfg())
    equal = compute_advantages("grpo", [group(traj(1), traj(1), traj(1))], cfg())
    empty = compute_advantages("grpo", [group(traj(1, n=0), traj(0, n=0))], cfg())
    assert per_traj(single) == [0.0] and per_traj(equal) == [0.0, 0.0, 0.0] and empty.steps == [[[], []]]


def test_penalties_in_return():
    # R = [1 - .1, 1] = [.9, 1]: mean .95, std sqrt(2 * .05^2 / 1) = .070711 -> [-.707107, .707107]
    g = group(traj(1, n=2, penalties={1: 0.1}), traj(1, n=2))
    assert per_traj(compute_advantages("grpo", [g], cfg())) == pytest.approx([-S, S], abs=1e-4)
    assert per_traj(compute_advantages("grpo", [g], cfg(penalties_in_return=False))) == [0.0, 0.0]


def test_drgrpo_rloo_reinforce_pp():
    g = group(traj(1), traj(0), traj(0), traj(1))
    assert per_traj(compute_advantages("drgrpo", [g], cfg())) == [0.5, -0.5, -0.5, 0.5]
    assert per_traj(compute_advantages("grpo", [g], cfg(grpo={"norm_by_std": False}))) == [0.5, -0.5, -0.5, 0.5]
    # RLOO on [1,0,0]: 1 - (0+0)/2 = 1; 0 - (1+0)/2 = -.5 (twice)
    assert per_traj(compute_advantages("rloo", [group(traj(1), traj(0), traj(0))], cfg())) == [1.0, -0.5, -0.5]
    assert per_traj(compute_advantages("rloo", [group(traj(1))], cfg())) == [0.0]
    # REINFORCE++: centred per group [.5,-.5] and [.5,.5,-.5,-.5]; over the batch mean 0, std sqrt(6*.25/5)
    a = compute_advantages("reinforce_pp", [group(traj(1), traj(0)), group(traj(1), traj(1), traj(0), traj(0))], cfg())
    z = 0.5 / math.sqrt(0.3)  # .912871
    assert per_traj(a, 0) == pytest.approx([z, -z], abs=1e-5)
    assert per_traj(a, 1) == pytest.approx([z, z, -z, -z], abs=1e-5)


def _gigpo_group():
    # A: anchors s0,s1, outcome 1 -> step rewards [0,1] -> returns (gamma .5) [.5, 1]
    # B: anchors s0,s2, outcome 0 -> returns [0, 0]
    return group(traj(1, n=2, anchors=["s0", "s1"]), traj(0, n=2, anchors=["s0", "s2"]))


def test_gigpo_by_hand():
    a = compute_advantages("gigpo", [_gigpo_group()], cfg(gigpo={"gamma": 0.5}))
    # A^E = [+S, -S]; anchor s0: returns [.5, 0] -> [+S, -S]; s1, s2 singletons -> 0
    assert a.steps[0][0] == pytest.approx([2 * S, S], abs=1e-4)
    assert a.steps[0][1] == pytest.approx([-2 * S, -S], abs=1e-4)
    mean_norm = compute_advantages("gigpo", [_gigpo_group()], cfg(gigpo={"gamma": 0.5, "norm": "mean_norm"}))
    # A^E = [.5, -.5]; anchor s0: [.25, -.25]
    assert mean_norm.steps[0] == [pytest.approx([0.75, 0.5]), pytest.approx([-0.75, -0.5])]
    omega = compute_advantages("gigpo", [_gigpo_group()], cfg(gigpo={"gamma": 0.5, "omega": 0.0}))
    assert omega.steps[0][0] == pytest.approx([S, S], abs=1e-4)


def test_gigpo_similarity_anchors_and_step_rows():
    assert anchor_groups(["The kitchen has a knife.", "the kitchen has a knife", "a pantry"], "exact", 0.95) == [0, 1, 2]
    assert anchor_groups(["The kitchen has a knife.", "the kitchen has a knife", "a pantry"], "similarity", 0.95) == [0, 0, 1]
    # episode stats over step rows: R rows [1,1,0,0,0]: mean .4, std sqrt((2*.36 + 3*.16)/4) = sqrt(.3)
    g = group(traj(1, n=2, anchors=["x", "y"]), traj(0, n=3, anchors=["p", "q", "r"]))
    a = compute_advantages("gigpo", [g], cfg(gigpo={"episode_stats": "step_rows"}))
    assert a.steps[0][0] == pytest.approx([0.6 / math.sqrt(0.3)] * 2, abs=1e-5)
    assert a.steps[0][1] == pytest.approx([-0.4 / math.sqrt(0.3)] * 3, abs=1e-5)


def _strata_group():
    s0 = [traj(1, n=2), traj(0, n=2, judged={0}), traj(0, n=2), traj(0, n=2)]
    s1 = [traj(1, n=2), traj(1, n=2), traj(1, n=2), traj(0, n=2)]
    return group(strategies=[s0, s1])


def test_strata_strategy_rewards_and_advantages():
    o = cfg().strata
    assert strategy_reward([1, 0, 0, 0], o) == 0.5  # top ceil(.5*4)=2 of [1,0,0,0] -> mean(1, 0)
    assert strategy_reward([1, 1, 1, 0], o) == 1.0
    mix = dataclasses.replace(o, strategy_reward="mix")
    assert strategy_reward([1, 0, 0, 0], mix) == pytest.approx(0.5 * 0.25 + 0.5 * 1)  # .625
    assert strategy_reward([1, 1, 1, 0], mix) == pytest.approx(0.5 * 0.75 + 0.5 * 1)  # .875
    a = compute_advantages("strata", [_strata_group()], cfg())
    assert a.strategies == [pytest.approx([-S, S], abs=1e-5)]  # rewards [.5, 1] normalised


def test_strata_action_advantage_judge_into_reward():
    # strategy 0, step rows x = R - kappa*judged = [1,1, -.1,0, 0,0, 0,0]: mean 1.9/8 = .2375
    # sum of squares: 2*.7625^2 + .3375^2 + 5*.2375^2 = 1.55875; std = sqrt(1.55875/7) = .471888
    a = compute_advantages("strata", [_strata_group()], cfg())
    std = math.sqrt(1.55875 / 7)
    s0 = a.steps[0][:4]
    assert s0[0] == pytest.approx([0.7625 / std] * 2, abs=1e-5)
    assert s0[1] == pytest.approx([-0.3375 / std, -0.2375 / std], abs=1e-5)
    assert s0[2] == pytest.approx([-0.2375 / std] * 2, abs=1e-5)


def test_strata_judge_into_advantage_and_trajectory_stats():
    # GRPO of [1,0,0,0]: mean .25, std .5 -> [1.5, -.5, -.5, -.5]; the judged step gets -.1 more
    adv = compute_advantages("strata", [_strata_group()], cfg(strata={"judge_penalty_into": "advantage"}))
    assert adv.steps[0][0] == pytest.approx([1.5, 1.5], abs=1e-5) and adv.steps[0][1] == pytest.approx([-0.6, -0.5], abs=1e-5)
    # trajectory stats: (0 - .1 - .25)/.5 = -.7 for the judged step, (0 - .25)/.5 = -.5 otherwise
    tr = compute_advantages("strata", [_strata_group()], cfg(strata={"stats_over": "trajectories"}))
    assert tr.steps[0][1] == pytest.approx([-0.7, -0.5], abs=1e-5) and tr.steps[0][0] == pytest.approx([1.5, 1.5], abs=1e-5)
    # kappa = 0 and trajectory stats is exactly GRPO within the strategy
    k0 = compute_advantages("strata", [_strata_group()], cfg(strata={"stats_over": "trajectories", "kappa": 0.0}))
    assert [row[0] for row in k0.steps[0][:4]] == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)


def test_strata_single_strategy_and_all_equal():
    one = group(strategies=[[traj(1), traj(0)]])
    a = compute_advantages("strata", [one], cfg())
    assert a.strategies == [[0.0]]
    same = group(strategies=[[traj(0, n=2), traj(0, n=2)], [traj(0, n=2), traj(0, n=2)]])
    b = compute_advantages("strata", [same], cfg())
    assert b.strategies == [[0.0, 0.0]] and all(x == 0.0 for row in b.steps[0] for x in row)


def test_step_gae_by_hand():
    g = group(traj(1, n=2))  # rewards [0, 1]; V = [.2, .4]; terminal value 0
    a = compute_advantages("step_gae", [g], cfg(gae={"gamma": 0.5, "lam": 0.5, "whiten": False}), values=[[[0.2, 0.4]]])
    # d1 = 1 + .5*0 - .4 = .6 = A1; d0 = 0 + .5*.4 - .2 = 0; A0 = 0 + .25*.6 = .15; G = A + V
    assert a.steps[0][0] == pytest.approx([0.15, 0.6]) and a.returns[0][0] == pytest.approx([0.35, 1.0])
    cut = group(traj(0, n=2, termination="max_steps"))  # truncated: bootstrap with V_last = .4
    b = compute_advantages("step_gae", [cut], cfg(gae={"gamma": 0.5, "lam": 0.5, "whiten": False}), values=[[[0.2, 0.4]]])
    # d1 = 0 + .5*.4 - .4 = -.2; d0 = 0 + .2 - .2 = 0; A0 = .25 * -.2 = -.05
    assert b.steps[0][0] == pytest.approx([-0.05, -0.2])
    white = compute_advantages("step_gae", [g], cfg(gae={"gamma": 0.5, "lam": 0.5}), values=[[[0.2, 0.4]]])
    assert white.steps[0][0] == pytest.approx([-S, S], abs=1e-5)


def test_token_gae_by_hand():
    g = group(traj(1, n=2))
    values = [[[[0.1, 0.2], [0.3]]]]  # step 0 has 2 response tokens, step 1 has 1
    a = compute_advantages("gae", [g], cfg(gae={"gamma": 1.0, "lam": 1.0, "whiten": False}), values=values)
    # token rewards [0, 0, 1]; with gamma = lam = 1, A_t = 1 - V_t
    assert a.token_advantages[0][0] == [pytest.approx([0.9, 0.8]), pytest.approx([0.7])]
    assert a.steps[0][0] == pytest.approx([0.85, 0.7])


def test_mt_grpo_by_hand():
    r0 = traj(1, n=2, rewards=[0.5, 0.0])
    r1 = traj(0, n=3, rewards=[0.0, 0.0, 0.0])
    a = compute_advantages("mt_grpo", [group(r0, r1)], cfg())
    # A^O = [+S, -S]; turn 0 rewards [.5, 0] -> [+S, -S]; turn 1 equal -> 0; turn 2 one rollout -> 0
    assert a.steps[0][0] == pytest.approx([2 * S, S], abs=1e-5)
    assert a.steps[0][1] == pytest.approx([-2 * S, -S, -S], abs=1e-5)


def test_env_step_rewards_option():
    # step_reward="env": returns from the env's own rewards [.5, .5] (gamma .5) -> [.75, .5]
    t1, t2 = traj(1, n=2, rewards=[0.5, 0.5], anchors=["a", "b"]), traj(0, n=2, rewards=[0, 0], anchors=["a", "c"])
    a = compute_advantages("gigpo", [group(t1, t2)], cfg(step_reward="env", gigpo={"gamma": 0.5, "norm": "mean_norm"}))
    # A^E = [.5, -.5]; anchor a: returns [.75, 0] -> [.375, -.375]
    assert a.steps[0][0] == pytest.approx([0.875, 0.5]) and a.steps[0][1] == pytest.approx([-0.875, -0.5])


def test_no_nan_and_purity_and_registry():
    g = _strata_group()
    before = repr(g)
    for name in ("grpo", "drgrpo", "rloo", "reinforce_pp", "gigpo", "strata", "mt_grpo"):
        adv = compute_advantages(name, [g, group(traj(0, n=0))], cfg())
        assert all(math.isfinite(x) for gg in adv.steps for row in gg for x in row)
    assert repr(g) == before  # estimators do not touch the records
    adv = compute_advantages("strata", [g], cfg())
    assign([g], adv)
    assert g.flat[0].steps[0].advantage == adv.steps[0][0][0] and g.flat[0].strategy_advantage == adv.strategies[0][0]
    with pytest.raises(UnknownNameError, match="'gigpo'"):
        compute_advantages("gigpo2", [g], cfg())
    with pytest.raises(ValueError, match="critic values"):
        compute_advantages("step_gae", [g], cfg())
