"""Every estimator against numbers worked out by hand (the arithmetic is in the comments)."""

import dataclasses
import math

import pytest

from stratarl.algos.advantages import (
    ESTIMATORS,
    AdvantageConfig,
    anchor_groups,
    assign,
    compute_advantages,
    jaccard,
    strategy_reward,
    with_step_penalties,
)
from stratarl.config import describe, load_config
from stratarl.errors import ConfigError, UnknownNameError
from stratarl.types import Group, Step, Task, Trajectory, Turn

TASK = Task(env="twx:coin", split="train", index=0, seed=0)
S = 1 / math.sqrt(2)  # 0.707107: normalising two different values always gives ±1/√2 (n=2, Bessel)


def traj(outcome, n=1, penalties=(), judged=(), anchors=None, rewards=None, termination="success", done_last=False):
    steps = []
    for i in range(n):
        steps.append(Step(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], text="", action="a",
                          anchor=(anchors or [f"s{i}"] * n)[i], penalty=dict(penalties).get(i, 0.0),
                          judged=i in judged, reward=(rewards or [0.0] * n)[i], done=done_last and i == n - 1))
    return Trajectory(task=TASK, steps=steps, outcome=outcome, won=outcome == 1, termination=termination)


def group(*trajs, strategies=None):
    if strategies is None:
        return Group(task=TASK, trajectories=[list(trajs)])
    turns = [Turn(prompt_ids=[1], response_ids=[2], logprobs=[0.0], text=f"s{i}") for i in range(len(strategies))]
    return Group(task=TASK, strategies=turns, trajectories=[list(ts) for ts in strategies])


def cfg(**kw):
    """AdvantageConfig with top-level keys and `section={...}` overrides."""
    base = AdvantageConfig()
    flat = {k: v for k, v in kw.items() if not isinstance(v, dict)}
    for name, opts in kw.items():
        if isinstance(opts, dict):
            flat[name] = dataclasses.replace(getattr(base, name), **opts)
    return dataclasses.replace(base, **flat)


def per_traj(adv, g=0):
    return [row[0] for row in adv.steps[g]]


# -- GRPO family -----------------------------------------------------------------------------------


def test_grpo_by_hand():
    # R = [1,0,0,1]: mean .5, unbiased std sqrt(4 * .25 / 3) = .57735 -> A = ±.5/.57735 = ±.866025
    a = compute_advantages("grpo", [group(traj(1), traj(0), traj(0), traj(1))], cfg())
    assert per_traj(a) == pytest.approx([0.866025, -0.866025, -0.866025, 0.866025], abs=1e-5)
    # every step of a trajectory gets its trajectory's advantage
    two_steps = compute_advantages("grpo", [group(traj(1, n=2), traj(0, n=3))], cfg())
    assert two_steps.steps[0] == [pytest.approx([S, S], abs=1e-5), pytest.approx([-S] * 3, abs=1e-5)]
    assert two_steps.strategies == []


def test_score_as_the_trajectory_return():
    # two lost games, one that scored .25 + .25 on its way: outcome returns tie (A = 0), scores do not
    progress, nothing = traj(0, n=3, rewards=[0.25, 0.0, 0.25]), traj(0, n=2)
    assert per_traj(compute_advantages("grpo", [group(progress, nothing)], cfg())) == [0.0, 0.0]
    adv = compute_advantages("grpo", [group(progress, nothing)], cfg(trajectory_reward="score"))
    assert per_traj(adv) == pytest.approx([S, -S], abs=1e-5)
    # with a .1 penalty on the scoring game: R = .5 - .1 = .4 vs 0, still ±1/√2
    progress.steps[1].penalty = 0.1
    adv = compute_advantages("strata", [group(strategies=[[progress, nothing], [nothing, nothing]])],
                             cfg(trajectory_reward="score"))
    # strategy rewards: top ⌈.5·2⌉ = 1 return: .4 vs 0 -> ±1/√2
    assert adv.strategies[0] == pytest.approx([S, -S], abs=1e-5)


def test_invalid_steps_never_pushed_up():
    # won episode (A = +1/√2) whose middle step was refused, lost episode (A = −1/√2) with a refused step
    won, lost = traj(1, n=3), traj(0, n=2)
    won.steps[1].valid = lost.steps[0].valid = False
    plain = compute_advantages("grpo", [group(won, lost)], cfg())
    assert plain.steps[0] == [pytest.approx([S, S, S], abs=1e-5), pytest.approx([-S, -S], abs=1e-5)]
    capped = compute_advantages("grpo", [group(won, lost)], cfg(invalid_steps="nonpositive"))
    assert capped.steps[0] == [pytest.approx([S, 0.0, S], abs=1e-5), pytest.approx([-S, -S], abs=1e-5)]


def test_grpo_ties():
    # R = [1,1,0]: mean 2/3, deviations [1/3, 1/3, -2/3], SS = 6/9, var = (6/9)/2 = 1/3, std = .57735
    # A = [.33333/.57735, same, -.66667/.57735] = [.57735, .57735, -1.154701]
    a = compute_advantages("grpo", [group(traj(1), traj(1), traj(0))], cfg())
    assert per_traj(a) == pytest.approx([0.57735, 0.57735, -1.154701], abs=1e-5)


def test_grpo_degenerate_groups():
    single = compute_advantages("grpo", [group(traj(1))], cfg())
    equal = compute_advantages("grpo", [group(traj(1), traj(1), traj(1))], cfg())
    zero_len = compute_advantages("grpo", [group(traj(1, n=0), traj(0, n=0))], cfg())
    empty = compute_advantages("grpo", [Group(task=TASK), Group(task=TASK, trajectories=[[]])], cfg())
    assert per_traj(single) == [0.0] and per_traj(equal) == [0.0, 0.0, 0.0]
    assert zero_len.steps == [[[], []]] and empty.steps == [[], []]


def test_penalties_in_return():
    # R = [1 - .1, 1] = [.9, 1]: mean .95, std sqrt(2 * .05² / 1) = .070711 -> [-.707107, .707107]
    g = group(traj(1, n=2, penalties={1: 0.1}), traj(1, n=2))
    assert per_traj(compute_advantages("grpo", [g], cfg())) == pytest.approx([-S, S], abs=1e-4)
    # off: R = [1, 1] -> all equal -> exactly 0
    assert per_traj(compute_advantages("grpo", [g], cfg(penalties_in_return=False))) == [0.0, 0.0]


def test_drgrpo_and_rloo():
    g = group(traj(1), traj(0), traj(0), traj(1))
    assert per_traj(compute_advantages("drgrpo", [g], cfg())) == [0.5, -0.5, -0.5, 0.5]  # R - .5
    assert per_traj(compute_advantages("grpo", [g], cfg(grpo={"norm_by_std": False}))) == [0.5, -0.5, -0.5, 0.5]
    # RLOO on [1,0,0]: 1 - (0+0)/2 = 1; 0 - (1+0)/2 = -.5 (twice)
    assert per_traj(compute_advantages("rloo", [group(traj(1), traj(0), traj(0))], cfg())) == [1.0, -0.5, -0.5]
    assert per_traj(compute_advantages("rloo", [group(traj(1))], cfg())) == [0.0]
    assert per_traj(compute_advantages("rloo", [group(traj(1), traj(1))], cfg())) == [0.0, 0.0]


def test_reinforce_pp_batch_normalisation():
    # centred per group: [.5, -.5] and [.5, .5, -.5, -.5]; over the 6 trajectories mean 0,
    # std sqrt(6 * .25 / 5) = sqrt(.3) -> ±.5/sqrt(.3) = ±.912871
    a = compute_advantages("reinforce_pp", [group(traj(1), traj(0)), group(traj(1), traj(1), traj(0), traj(0))], cfg())
    z = 0.5 / math.sqrt(0.3)
    assert per_traj(a, 0) == pytest.approx([z, -z], abs=1e-5)
    assert per_traj(a, 1) == pytest.approx([z, z, -z, -z], abs=1e-5)


def test_reinforce_pp_step_row_statistics():
    groups = [group(traj(1, n=2), traj(0, n=1)), group(traj(1, n=1), traj(0, n=2))]
    # trajectories: centred [.5, -.5, .5, -.5]: std sqrt(4 * .25 / 3) = .57735 -> ±.866025
    by_traj = compute_advantages("reinforce_pp", groups, cfg())
    assert by_traj.steps[0] == [pytest.approx([0.866025] * 2, abs=1e-5), pytest.approx([-0.866025], abs=1e-5)]
    # step rows: [.5, .5, -.5] + [.5, -.5, -.5]: mean 0, std sqrt(6 * .25 / 5) = sqrt(.3) -> ±.912871
    rows = compute_advantages("reinforce_pp", groups, cfg(reinforce_pp={"batch_stats": "step_rows"}))
    z = 0.5 / math.sqrt(0.3)
    assert rows.steps[1] == [pytest.approx([z], abs=1e-5), pytest.approx([-z, -z], abs=1e-5)]


# -- GiGPO -----------------------------------------------------------------------------------------


def _gigpo_group():
    # A: anchors s0,s1, outcome 1 -> step rewards [0,1] -> returns (γ .5) [.5, 1]
    # B: anchors s0,s2, outcome 0 -> returns [0, 0]
    return group(traj(1, n=2, anchors=["s0", "s1"]), traj(0, n=2, anchors=["s0", "s2"]))


def test_gigpo_by_hand():
    a = compute_advantages("gigpo", [_gigpo_group()], cfg(gigpo={"gamma": 0.5}))
    # A^E = [+S, -S]; anchor s0: returns [.5, 0] -> [+S, -S]; s1, s2 singletons -> 0
    assert a.steps[0][0] == pytest.approx([2 * S, S], abs=1e-4)
    assert a.steps[0][1] == pytest.approx([-2 * S, -S], abs=1e-4)
    mean_norm = compute_advantages("gigpo", [_gigpo_group()], cfg(gigpo={"gamma": 0.5, "norm": "mean_norm"}))
    # F = 1: A^E = R - mean = [.5, -.5]; anchor s0: [.5 - .25, 0 - .25] = [.25, -.25]
    assert mean_norm.steps[0] == [pytest.approx([0.75, 0.5]), pytest.approx([-0.75, -0.5])]
    omega = compute_advantages("gigpo", [_gigpo_group()], cfg(gigpo={"gamma": 0.5, "omega": 0.0}))
    assert omega.steps[0][0] == pytest.approx([S, S], abs=1e-4)


def _kitchen_group():
    # A: 3 steps, invalid first step (penalty .1), outcome 1 -> r = [-.1, 0, 1]
    #    γ = .95: R_2 = 1, R_1 = .95, R_0 = -.1 + .95 * .95 = .8025
    # B: 2 steps, outcome 0 -> r = [0, 0], returns [0, 0]
    # The first anchors differ only in case and punctuation.
    a = traj(1, n=3, penalties={0: 0.1}, anchors=["You are in the kitchen.", "You see a knife.", "Done."])
    b = traj(0, n=2, anchors=["you are in the kitchen", "A pantry."])
    return group(a, b)


def test_gigpo_exact_vs_similarity_anchors_with_discounted_returns():
    # trajectory returns R = [1 - .1, 0] = [.9, 0] -> A^E = [+S, -S] (mean_std_norm)
    exact = compute_advantages("gigpo", [_kitchen_group()], cfg())
    # exact: no two anchors are identical -> every anchor group is a singleton -> A^S = 0
    assert exact.steps[0] == [pytest.approx([S] * 3, abs=1e-4), pytest.approx([-S] * 2, abs=1e-4)]
    sim = compute_advantages("gigpo", [_kitchen_group()], cfg(gigpo={"anchors": "similarity"}))
    # similarity: the two kitchen anchors have word sets {you, are, in, the, kitchen}: Jaccard 1 >= .95,
    # so A0 and B0 share a group: returns [.8025, 0] -> [+S, -S]
    assert sim.steps[0] == [pytest.approx([2 * S, S, S], abs=1e-4), pytest.approx([-2 * S, -S], abs=1e-4)]
    mean_norm = compute_advantages("gigpo", [_kitchen_group()], cfg(gigpo={"anchors": "similarity", "norm": "mean_norm"}))
    # F = 1: A^E = [.9 - .45, 0 - .45] = ±.45; kitchen group mean .40125 -> A^S = ±.40125
    assert mean_norm.steps[0][0] == pytest.approx([0.85125, 0.45, 0.45])
    assert mean_norm.steps[0][1] == pytest.approx([-0.85125, -0.45])


def test_anchor_clustering():
    texts = ["The kitchen has a knife.", "the kitchen has a knife", "a pantry", "The kitchen has a fork."]
    assert anchor_groups(texts, "exact", 0.95) == [0, 1, 2, 3]
    # Jaccard(knife, fork variant) = |{the,kitchen,has,a}| / |{the,kitchen,has,a,knife,fork}| = 4/6
    assert jaccard(texts[0], texts[3]) == pytest.approx(4 / 6)
    assert anchor_groups(texts, "similarity", 0.95) == [0, 0, 1, 2]
    assert anchor_groups(texts, "similarity", 0.6) == [0, 0, 1, 0]


def test_gigpo_episode_statistics_over_step_rows():
    # step rows carry R = [1,1,0,0,0]: mean .4, std sqrt((2 * .36 + 3 * .16) / 4) = sqrt(.3)
    g = group(traj(1, n=2, anchors=["x", "y"]), traj(0, n=3, anchors=["p", "q", "r"]))
    a = compute_advantages("gigpo", [g], cfg(gigpo={"episode_stats": "step_rows"}))
    assert a.steps[0][0] == pytest.approx([0.6 / math.sqrt(0.3)] * 2, abs=1e-5)
    assert a.steps[0][1] == pytest.approx([-0.4 / math.sqrt(0.3)] * 3, abs=1e-5)


def test_env_step_rewards_option():
    # step_reward="env": returns from the env's own rewards [.5, .5] (γ .5) -> [.75, .5]
    t1, t2 = traj(1, n=2, rewards=[0.5, 0.5], anchors=["a", "b"]), traj(0, n=2, rewards=[0, 0], anchors=["a", "c"])
    a = compute_advantages("gigpo", [group(t1, t2)], cfg(step_reward="env", gigpo={"gamma": 0.5, "norm": "mean_norm"}))
    # A^E = [.5, -.5]; anchor a: returns [.75, 0] -> [.375, -.375]
    assert a.steps[0][0] == pytest.approx([0.875, 0.5]) and a.steps[0][1] == pytest.approx([-0.875, -0.5])


# -- StraTA ----------------------------------------------------------------------------------------


def _strata_group():
    s0 = [traj(1, n=2), traj(0, n=2, judged={0}), traj(0, n=2), traj(0, n=2)]
    s1 = [traj(1, n=2), traj(1, n=2), traj(1, n=2), traj(0, n=2)]
    return group(strategies=[s0, s1])


def test_strategy_rewards_top_delta_and_mix():
    o = cfg().strata
    assert strategy_reward([1, 0, 0, 0], o) == 0.5  # top ⌈.5·4⌉ = 2 of [1,0,0,0]: mean(1, 0)
    assert strategy_reward([1, 1, 1, 0], o) == 1.0  # mean(1, 1)
    assert strategy_reward([0.5, 0.5, 0.5, 1.0], o) == 0.75  # ties: top 2 = [1, .5]
    assert strategy_reward([1, 0, 0], o) == 0.5  # M = 3: ⌈1.5⌉ = 2 -> mean(1, 0)
    assert strategy_reward([0.3], o) == 0.3 and strategy_reward([], o) == 0.0
    mix = dataclasses.replace(o, strategy_reward="mix")
    assert strategy_reward([1, 0, 0, 0], mix) == pytest.approx(0.5 * 0.25 + 0.5 * 1)  # .625
    assert strategy_reward([1, 1, 1, 0], mix) == pytest.approx(0.5 * 0.75 + 0.5 * 1)  # .875


def test_strata_strategy_advantage():
    a = compute_advantages("strata", [_strata_group()], cfg())
    assert a.strategies == [pytest.approx([-S, S], abs=1e-5)]  # rewards [.5, 1] normalised
    mix = compute_advantages("strata", [_strata_group()], cfg(strata={"strategy_reward": "mix"}))
    assert mix.strategies == [pytest.approx([-S, S], abs=1e-5)]  # [.625, .875]: two values -> ±S
    # Dr.GRPO-like magnitudes are not used here: strategy advantages are always std-normalised


def test_strata_action_advantage_judge_into_reward():
    # strategy 0, step rows x = R - κ·judged = [1,1, -.1,0, 0,0, 0,0]: mean 1.9/8 = .2375
    # SS: 2 * .7625² + .3375² + 5 * .2375² = 1.55875; std = sqrt(1.55875 / 7) = .471888
    a = compute_advantages("strata", [_strata_group()], cfg())
    std = math.sqrt(1.55875 / 7)
    s0 = a.steps[0][:4]
    assert s0[0] == pytest.approx([0.7625 / std] * 2, abs=1e-5)
    assert s0[1] == pytest.approx([-0.3375 / std, -0.2375 / std], abs=1e-5)
    assert s0[2] == pytest.approx([-0.2375 / std] * 2, abs=1e-5)
    # strategy 1 (no judged step), rows [1,1, 1,1, 1,1, 0,0]: mean .75, std sqrt((6 * .0625 + 2 * .5625)/7)
    std1 = math.sqrt(1.5 / 7)
    assert a.steps[0][4] == pytest.approx([0.25 / std1] * 2, abs=1e-5)
    assert a.steps[0][7] == pytest.approx([-0.75 / std1] * 2, abs=1e-5)


def test_strata_judge_into_advantage_and_trajectory_stats():
    # GRPO of [1,0,0,0]: mean .25, std .5 -> [1.5, -.5, -.5, -.5]; the judged step gets -.1 more
    adv = compute_advantages("strata", [_strata_group()], cfg(strata={"judge_penalty_into": "advantage"}))
    assert adv.steps[0][0] == pytest.approx([1.5, 1.5], abs=1e-5)
    assert adv.steps[0][1] == pytest.approx([-0.6, -0.5], abs=1e-5)
    # trajectory stats: (0 - .1 - .25)/.5 = -.7 for the judged step, (0 - .25)/.5 = -.5 otherwise
    tr = compute_advantages("strata", [_strata_group()], cfg(strata={"stats_over": "trajectories"}))
    assert tr.steps[0][1] == pytest.approx([-0.7, -0.5], abs=1e-5) and tr.steps[0][0] == pytest.approx([1.5, 1.5], abs=1e-5)
    # κ = 0 and trajectory stats is exactly GRPO within the strategy
    k0 = compute_advantages("strata", [_strata_group()], cfg(strata={"stats_over": "trajectories", "kappa": 0.0}))
    assert [row[0] for row in k0.steps[0][:4]] == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)


def test_strata_judged_step_among_equal_returns():
    # all R = 0, one judged step. Step rows x = [-.1, 0, 0, 0]: mean -.025, SS = .075² + 3 * .025² = .0075,
    # std = sqrt(.0075/3) = .05 -> [-1.5, .5, .5, .5]: finite although the returns tie
    g = group(strategies=[[traj(0, n=2, judged={0}), traj(0, n=2)]])
    a = compute_advantages("strata", [g], cfg())
    assert a.steps[0] == [pytest.approx([-1.5, 0.5], abs=1e-4), pytest.approx([0.5, 0.5], abs=1e-4)]
    # advantage mode: GRPO of [0, 0] = 0, minus κ on the judged step
    b = compute_advantages("strata", [g], cfg(strata={"judge_penalty_into": "advantage"}))
    assert b.steps[0] == [pytest.approx([-0.1, 0.0]), [0.0, 0.0]]


def test_strata_single_strategy_and_all_equal():
    one = group(strategies=[[traj(1), traj(0)]])
    a = compute_advantages("strata", [one], cfg())
    assert a.strategies == [[0.0]]  # N = 1
    assert per_traj(a) == pytest.approx([S, -S], abs=1e-5)
    same = group(strategies=[[traj(0, n=2), traj(0, n=2)], [traj(0, n=2), traj(0, n=2)]])
    b = compute_advantages("strata", [same], cfg())
    assert b.strategies == [[0.0, 0.0]] and all(x == 0.0 for row in b.steps[0] for x in row)
    singleton = compute_advantages("strata", [group(strategies=[[traj(1, n=3)]])], cfg())
    assert singleton.steps == [[[0.0, 0.0, 0.0]]]


# -- value-based -----------------------------------------------------------------------------------

GAE_HALF = {"gamma": 0.5, "lam": 0.5, "whiten": False}


def test_step_gae_by_hand():
    g = group(traj(1, n=2))  # rewards [0, 1]; V = [.2, .4]; success -> V after the last step = 0
    a = compute_advantages("step_gae", [g], cfg(gae=GAE_HALF), values=[[[0.2, 0.4]]])
    # δ1 = 1 + .5*0 - .4 = .6 = A1; δ0 = 0 + .5*.4 - .2 = 0; A0 = 0 + .25*.6 = .15; G = A + V
    assert a.steps[0][0] == pytest.approx([0.15, 0.6]) and a.returns[0][0] == pytest.approx([0.35, 1.0])
    white = compute_advantages("step_gae", [g], cfg(gae={"gamma": 0.5, "lam": 0.5}), values=[[[0.2, 0.4]]])
    assert white.steps[0][0] == pytest.approx([-S, S], abs=1e-5)  # whitened over the two steps
    assert white.returns[0][0] == pytest.approx([0.35, 1.0])  # targets are not whitened


@pytest.mark.parametrize("termination", ["max_steps", "parse_error", "timeout", "context_overflow"])
def test_step_gae_bootstraps_cut_off_episodes(termination):
    cut = group(traj(0, n=2, termination=termination))
    b = compute_advantages("step_gae", [cut], cfg(gae=GAE_HALF), values=[[[0.2, 0.4]]])
    # V after the last step = V_last = .4: δ1 = 0 + .5*.4 - .4 = -.2; δ0 = 0 + .5*.4 - .2 = 0; A0 = .25 * -.2
    assert b.steps[0][0] == pytest.approx([-0.05, -0.2])
    off = compute_advantages("step_gae", [cut], cfg(gae={**GAE_HALF, "bootstrap_truncated": False}),
                             values=[[[0.2, 0.4]]])
    # no bootstrap: δ1 = -.4; δ0 = 0; A0 = .25 * -.4 = -.1
    assert off.steps[0][0] == pytest.approx([-0.1, -0.4])


def test_step_gae_terminal_episodes_do_not_bootstrap():
    # env_done, or a last step marked done, end the episode: V after it is 0
    for t in (traj(0, n=2, termination="env_done"), traj(0, n=2, termination="max_steps", done_last=True)):
        b = compute_advantages("step_gae", [group(t)], cfg(gae=GAE_HALF), values=[[[0.2, 0.4]]])
        assert b.steps[0][0] == pytest.approx([-0.1, -0.4])


def test_token_gae_by_hand():
    g = group(traj(1, n=2))
    values = [[[[0.1, 0.2], [0.3]]]]  # step 0 has 2 response tokens, step 1 has 1; token rewards [0, 0, 1]
    a = compute_advantages("gae", [g], cfg(gae={"gamma": 1.0, "lam": 1.0, "whiten": False}), values=values)
    # γ = λ = 1: A_t = (sum of later rewards) - V_t = 1 - V_t
    assert a.token_advantages[0][0] == [pytest.approx([0.9, 0.8]), pytest.approx([0.7])]
    assert a.steps[0][0] == pytest.approx([0.85, 0.7])
    b = compute_advantages("gae", [g], cfg(gae=GAE_HALF), values=values)
    # token 2: δ = 1 - .3 = .7 = A2; token 1: δ = .5*.3 - .2 = -.05, A1 = -.05 + .25*.7 = .125
    # token 0: δ = .5*.2 - .1 = 0, A0 = .25*.125 = .03125; returns A + V = [.13125, .325, 1.0]
    assert b.token_advantages[0][0] == [pytest.approx([0.03125, 0.125]), pytest.approx([0.7])]
    assert b.token_returns[0][0] == [pytest.approx([0.13125, 0.325]), pytest.approx([1.0])]
    assert b.steps[0][0] == pytest.approx([0.078125, 0.7]) and b.returns[0][0] == pytest.approx([0.13125, 1.0])
    w = compute_advantages("gae", [g], cfg(gae={"gamma": 1.0, "lam": 1.0}), values=values)
    # whitened over the 3 tokens [.9, .8, .7]: mean .8, std .1 -> [1, 0, -1]
    assert w.token_advantages[0][0] == [pytest.approx([1.0, 0.0], abs=1e-4), pytest.approx([-1.0], abs=1e-4)]


def test_value_estimators_check_their_input():
    g = group(traj(1, n=2))
    with pytest.raises(ValueError, match="needs critic values"):
        compute_advantages("step_gae", [g], cfg())
    with pytest.raises(ValueError, match="one entry per group, rollout"):
        compute_advantages("step_gae", [g], cfg(), values=[[[0.1]]])


# -- MT-GRPO ---------------------------------------------------------------------------------------


def test_mt_grpo_outcome_turn_rewards():
    # step_reward="outcome": turn rewards r0 [0, 1], r1 [0, 0, 0]; r1's first step is invalid (penalty .1),
    # which lowers R but not the turn reward (turn rewards are taken before penalties)
    r0, r1 = traj(1, n=2), traj(0, n=3, penalties={0: 0.1})
    a = compute_advantages("mt_grpo", [group(r0, r1)], cfg())
    # A^O: R = [1, -.1] -> [+S, -S]; turn 0: [0, 0] -> 0; turn 1: [1, 0] -> [+S, -S]; turn 2: one rollout -> 0
    assert a.steps[0][0] == pytest.approx([S, 2 * S], abs=1e-5)
    assert a.steps[0][1] == pytest.approx([-S, -2 * S, -S], abs=1e-5)


def test_mt_grpo_env_turn_rewards_and_lambda():
    r0 = traj(1, n=2, rewards=[0.5, 0.0])
    r1 = traj(0, n=3, rewards=[0.0, 0.0, 0.0])
    a = compute_advantages("mt_grpo", [group(r0, r1)], cfg(step_reward="env"))
    # A^O = [+S, -S]; turn 0 rewards [.5, 0] -> [+S, -S]; turn 1 equal -> 0; turn 2 one rollout -> 0
    assert a.steps[0][0] == pytest.approx([2 * S, S], abs=1e-5)
    assert a.steps[0][1] == pytest.approx([-2 * S, -S, -S], abs=1e-5)
    half = compute_advantages("mt_grpo", [group(r0, r1)], cfg(step_reward="env", mt_grpo={"lam": 0.5}))
    assert half.steps[0][0] == pytest.approx([1.5 * S, S], abs=1e-5)


# -- conventions, purity, registry, config ---------------------------------------------------------


def test_no_nan_on_degenerate_input_and_purity():
    groups = [_strata_group(), group(traj(0, n=0)), Group(task=TASK), group(traj(1, n=1))]
    step_values = [[[0.1, 0.2]] * 8, [[]], [], [[0.3]]]
    token_values = [[[[0.1], [0.2, 0.3]]] * 8, [[]], [], [[[0.3, 0.1]]]]
    before = repr(groups)
    for name in ESTIMATORS:
        values = {"step_gae": step_values, "gae": token_values}.get(name)
        adv = compute_advantages(name, groups, cfg(), values=values)
        flat = [x for gg in adv.steps for row in gg for x in row]
        assert len(flat) == 8 * 2 + 1 and all(math.isfinite(x) for x in flat), name
        assert adv.steps[1] == [[]] and adv.steps[2] == []
    assert repr(groups) == before  # estimators do not touch the records


def test_assign_writes_records():
    g = _strata_group()
    adv = compute_advantages("strata", [g], cfg())
    assign([g], adv)
    assert g.flat[0].steps[1].advantage == adv.steps[0][0][1]
    assert g.flat[5].strategy_advantage == adv.strategies[0][1]


def test_with_step_penalties_is_kl_in_the_reward():
    g = group(traj(1, n=2), traj(1, n=2))
    shaped = with_step_penalties([g], [[[0.0, 0.1], [0.0, 0.0]]])
    assert g.flat[0].steps[1].penalty == 0.0 and shaped[0].flat[0].steps[1].penalty == 0.1
    # R = [.9, 1] -> [-S, +S]
    assert per_traj(compute_advantages("grpo", shaped, cfg())) == pytest.approx([-S, S], abs=1e-4)


def test_registry_names_the_closest():
    with pytest.raises(UnknownNameError, match="'gigpo'"):
        compute_advantages("gigpo2", [], cfg())


def test_every_option_is_a_documented_config_key():
    rows = describe(AdvantageConfig)
    assert all(doc for _, _, _, doc in rows), [k for k, _, _, d in rows if not d]
    defaults = {k: v for k, _, v, _ in rows}
    assert defaults["strata.kappa"] == 0.1 and defaults["strata.delta"] == 0.5 and defaults["gigpo.gamma"] == 0.95
    assert defaults["gae.gamma"] == 0.99 and defaults["gae.lam"] == 1.0 and defaults["gigpo.similarity"] == 0.95
    c = load_config(AdvantageConfig, overrides=["strata.judge_penalty_into=advantage", "gigpo.anchors=similarity"])
    assert c.strata.judge_penalty_into == "advantage" and c.gigpo.anchors == "similarity"
    with pytest.raises(ConfigError, match="kappa"):
        load_config(AdvantageConfig, overrides=["strata.kapa=0.2"])


def test_all_equal_values_normalise_to_exact_zero():
    # sum([-0.4] * 8) / 8 is -0.39999999999999997 in floats; divided by eps = 1e-6 that rounding
    # would become a spurious -5.55e-11 advantage on every row. All-equal must give exactly 0.
    from stratarl.algos.advantages import normalize, normalize_with

    assert normalize([-0.4] * 8, 1e-6) == [0.0] * 8
    assert normalize_with([-0.4, -0.4], [-0.4] * 8, 1e-6) == [0.0, 0.0]
    assert normalize([0.1] * 3, 1e-6, by_std=False) == [0.0] * 3
