"""DPEPO's diversity rewards against numbers worked out by hand (the arithmetic is in the comments).

Defaults unless a test says otherwise: α = 0.8, ω = γ = β = 0.95, `terms = "paper"`, so a step's reward is
R = (α^Cd + ω^Cw + γ^Md + β^Mw)/2 with Cd/Cw the depth/width action repeats and Md/Mw the depth/width
transition repeats, and R_max = 2. States are the observations (`Step.anchor`).
"""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from stratarl.algos.advantages import AdvantageConfig, compute_advantages
from stratarl.algos.diversity_rewards import (
    DiversityRewardConfig,
    RepeatCounts,
    apply_diversity_rewards,
    diversity_metrics,
    diversity_penalties,
    diversity_rewards,
    repeat_counts,
    scale_advantages,
)
from stratarl.config import describe, load_config
from stratarl.errors import ConfigError
from stratarl.train import rl
from stratarl.train.config import TrainConfig
from stratarl.types import Advantages, Group, Step, Task, Trajectory

TASK = Task(env="twx:coin", split="train", index=0, seed=0)
DOC = (Path(__file__).resolve().parents[2] / "docs" / "algorithms.md").read_text()


def traj(pairs, outcome=0.0, invalid=()):
    """(anchor, action) pairs; step indices in `invalid` are invalid steps."""
    steps = [Step(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], text="", anchor=s, action=a, valid=i not in invalid)
             for i, (s, a) in enumerate(pairs)]
    return Trajectory(task=TASK, steps=steps, outcome=outcome, termination="success" if outcome else "max_steps")


def group(*trajs):
    return Group(task=TASK, trajectories=[list(trajs)])


def cfg(**kw):
    return DiversityRewardConfig(enabled=True, **kw)


def close(got, want, tol=1e-9):
    """Nested lists equal to within `tol` (pytest.approx does not nest)."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(close(g, w, tol) for g, w in zip(got, want, strict=True))
    return math.isclose(got, want, abs_tol=tol)


def _three_rollouts():
    # r0: go north @s0, take key @s1, take key @s1 (a repeat: same action, same transition)
    # r1: go north @s0 (spelled differently: canonicalised to the same action), open door @s1
    # r2: look @s0
    return group(traj([("s0", "go north"), ("s1", "take key"), ("s1", "take key")]),
                 traj([("s0", "Go  North"), ("s1", "open door")]),
                 traj([("s0", "look")]))


# -- counts ----------------------------------------------------------------------------------------


def test_repeat_counts_depth_and_width():
    c = repeat_counts(_three_rollouts(), cfg())
    # step 0: r0 and r1 both take (s0, go north): each sees one other rollout with the same action (Cw = 1)
    #         and the same transition (Mw = 1); r2's look is unique.
    # step 1: take key vs open door, different transitions: nothing repeats.
    # step 2: only r0 is left; take key @s1 repeats its own step 1 (Cd = 1, Md = 1), no one to compare with.
    assert c == [[RepeatCounts(0, 1, 0, 1), RepeatCounts(0, 0, 0, 0), RepeatCounts(1, 0, 1, 0)],
                 [RepeatCounts(0, 1, 0, 1), RepeatCounts(0, 0, 0, 0)],
                 [RepeatCounts(0, 0, 0, 0)]]


def test_step_rewards_paper_and_code_terms():
    g = _three_rollouts()
    # paper: r0 t0 (1 + .95 + 1 + .95)/2 = 1.95; t1 4/2 = 2; t2 (.8 + 1 + .95 + 1)/2 = 3.75/2 = 1.875
    assert close(diversity_rewards([g], cfg()), [[[1.95, 2.0, 1.875], [1.95, 2.0], [2.0]]])
    # code: R = (ω^Cw + (α^Cd + γ^Md + β^Mw)/3)/2
    #   r0 t0 (.95 + (1 + 1 + .95)/3)/2 = (.95 + .983333)/2 = .9666667
    #   r0 t2 (1 + (.8 + .95 + 1)/3)/2 = (1 + .9166667)/2 = .9583333
    code = diversity_rewards([g], cfg(terms="code"))
    assert close(code, [[[(0.95 + 2.95 / 3) / 2, 1.0, (1 + 2.75 / 3) / 2], [(0.95 + 2.95 / 3) / 2, 1.0], [1.0]]])


def test_previous_action_transitions():
    # r0 actions a, b, a, b (anchors all different); r1 actions a, b (anchors s0, s1).
    g = group(traj([("s0", "a"), ("s1", "b"), ("s2", "a"), ("s3", "b")]), traj([("s0", "a"), ("s1", "b")]))
    c = repeat_counts(g, cfg(transition_state="previous_action"))
    # transitions (prev → action): r0 [-, a→b, b→a, a→b], r1 [-, a→b]; a first step has none.
    # r0 t0: Cw 1 (r1 also a).  t1: Cw 1, Mw 1 (r1's a→b at step 1).  t2: Cd 1 (a at t0); b→a new.
    # r0 t3: Cd 1 (b at t1), Md 1 (a→b at t1).  r1 t1: Cw 1, Mw 1 (r0's a→b at t1).
    assert c == [[RepeatCounts(0, 1, 0, 0), RepeatCounts(0, 1, 0, 1), RepeatCounts(1, 0, 0, 0), RepeatCounts(1, 0, 1, 0)],
                 [RepeatCounts(0, 1, 0, 0), RepeatCounts(0, 1, 0, 1)]]
    # with observations as states, r0 t0's (s0, a) is r1's transition too: Mw 1
    assert repeat_counts(g, cfg())[0][0] == RepeatCounts(0, 1, 0, 1)


def test_width_count_rollouts_or_occurrences():
    # r0 takes x @s0 three times; r1 takes y then x @s0. At r1's step 1, (s0, x) was taken by one other
    # rollout, twice (r0's steps 0 and 1).
    g = group(traj([("s0", "x"), ("s0", "x"), ("s0", "x")]), traj([("s0", "y"), ("s0", "x")]))
    assert repeat_counts(g, cfg())[1][1] == RepeatCounts(0, 1, 0, 1)
    assert repeat_counts(g, cfg(width_count="occurrences"))[1][1] == RepeatCounts(0, 1, 0, 2)
    # R: (1 + .95 + 1 + .95)/2 = 1.95 vs (1 + .95 + 1 + .95²)/2 = 3.8525/2 = 1.92625
    assert diversity_rewards([g], cfg())[0][1][1] == pytest.approx(1.95)
    assert diversity_rewards([g], cfg(width_count="occurrences"))[0][1][1] == pytest.approx(1.92625)


def test_pool_per_step_is_the_papers_shared_reward():
    # four one-step rollouts at s0 with actions a, a, b, c
    g = group(*[traj([("s0", a)]) for a in "aabc"])
    # per rollout: the two a's have Cw = Mw = 1 -> 1.95; b and c repeat nothing -> 2
    assert close(diversity_rewards([g], cfg()), [[[1.95], [1.95], [2.0], [2.0]]])
    # per step: Cw(A_t) = |A| − |set(A)| = 4 − 3 = 1 for everyone; terms a: (1 + .95 + 1 + .95)/2 = 1.95,
    # b, c: (1 + .95 + 1 + 1)/2 = 1.975; mean (2·1.95 + 2·1.975)/4 = 1.9625 for all four
    assert close(diversity_rewards([g], cfg(pool="step")), [[[1.9625]] * 4])


def test_width_ignore_and_invalid_reward():
    g = group(traj([("s0", "look")]), traj([("s0", "look")]))
    # look twice: Cw = 1, Mw = 1 -> 1.95; ignored at width level (the transition still counts): Cw = 0 ->
    # (1 + 1 + 1 + .95)/2 = 1.975
    assert close(diversity_rewards([g], cfg()), [[[1.95], [1.95]]])
    assert close(diversity_rewards([g], cfg(width_ignore=["Look"])), [[[1.975], [1.975]]])
    # an invalid first step: scored like any other (nothing repeats: 2), or the fixed invalid_reward 0.5
    h = group(traj([("s0", ""), ("s0", "a")], invalid={0}))
    assert close(diversity_rewards([h], cfg()), [[[2.0, 2.0]]])
    assert close(diversity_rewards([h], cfg(invalid_reward=0.5)), [[[0.5, 2.0]]])


def test_empty_groups_and_steps():
    empty, short = Group(task=TASK), group(traj([]), traj([("s0", "a")]))
    assert diversity_rewards([empty, short], cfg()) == [[], [[], [2.0]]]
    assert diversity_rewards([short], cfg(pool="step")) == [[[], [2.0]]]
    adv, metrics = apply_diversity_rewards([empty, short], cfg(), lambda gs: compute_advantages("grpo", gs, AdvantageConfig()))
    assert adv.steps == [[], [[], [0.0]]] and metrics["diversity/penalised_fraction"] == 0.0


def test_bad_coefficients_are_config_errors():
    with pytest.raises(ConfigError, match="diversity_rewards.alpha"):
        diversity_rewards([], cfg(alpha=0.0))
    with pytest.raises(ConfigError, match="diversity_rewards.beta"):
        diversity_rewards([], cfg(beta=1.5))
    with pytest.raises(ConfigError, match="diversity_rewards.coef"):
        diversity_rewards([], cfg(coef=-0.1))


# -- combination with the success reward -----------------------------------------------------------


def _won_and_lost():
    # r0 won: a @s0, then a again @s1 (Cd = 1: R = (.8 + 1 + 1 + 1)/2 = 1.9)
    # r1 lost: a @s0 (shared with r0: R = 1.95 for both), then b @s0 (new: R = 2)
    return group(traj([("s0", "a"), ("s1", "a")], outcome=1.0), traj([("s0", "a"), ("s0", "b")]))


def grpo(gs):
    return compute_advantages("grpo", gs, AdvantageConfig())


def test_advantage_mode_is_eq_9():
    g = _won_and_lost()
    assert close(diversity_rewards([g], cfg()), [[[1.95, 1.9], [1.95, 2.0]]])
    # GRPO: returns 1, 0 -> mean .5, std √.5 -> A = ±.5/(√.5 + ε)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    adv, _ = apply_diversity_rewards([g], cfg(), grpo)
    # won (A > 0): Φ_step = R -> 1.95·A, 1.9·A; lost (A < 0): Φ_step = 2 − R -> .05·(−A), 0·(−A): the lost
    # rollout's repeated step is blamed a little, its new action not at all
    assert close(adv.steps, [[[1.95 * a, 1.9 * a], [-0.05 * a, 0.0]]])


def test_reward_mode_adds_penalties_before_the_estimator():
    g = _won_and_lost()
    # coef·(1 − R/2): r0 .1·(1 − .975) = .0025, .1·(1 − .95) = .005; r1 .0025, 0
    pen = diversity_penalties(diversity_rewards([g], cfg(combine="reward")), cfg(combine="reward"))
    assert close(pen, [[[0.0025, 0.005], [0.0025, 0.0]]])
    # Dr.GRPO on R = outcome − Σ penalty: 1 − .0075 = .9925 and −.0025; mean .495 -> A = ±.4975 (not ±.5)
    adv, _ = apply_diversity_rewards([g], cfg(combine="reward"),
                                     lambda gs: compute_advantages("drgrpo", gs, AdvantageConfig()))
    assert close(adv.steps, [[[0.4975, 0.4975], [-0.4975, -0.4975]]])
    assert all(s.penalty == 0.0 for t in g.flat for s in t.steps)  # the originals are untouched
    # advantage mode puts nothing into the penalties
    assert diversity_penalties([[[1.5]]], cfg()) == [[[0.0]]]


def test_metrics():
    g = _won_and_lost()
    r = diversity_rewards([g], cfg())
    # mean R (1.95 + 1.9 + 1.95 + 2)/4 = 1.95; three of four steps below 2; unique actions {a, b} of 4 = .5
    assert diversity_metrics([g], r, cfg()) == pytest.approx({
        "diversity/step_reward_mean": 1.95, "diversity/penalised_fraction": 0.75, "diversity/penalty_mean": 0.0,
        "diversity/unique_action_fraction": 0.5})
    # reward mode: mean penalty (.0025 + .005 + .0025 + 0)/4 = .0025
    assert diversity_metrics([g], r, cfg(combine="reward"))["diversity/penalty_mean"] == pytest.approx(0.0025)


def test_token_advantages_are_scaled_by_their_sign():
    adv = Advantages(steps=[[[0.5, -0.5]]], token_advantages=[[[[0.5, -0.2], [-0.5]]]], returns=[[[1.0, 2.0]]])
    out = scale_advantages(adv, [[[1.5, 1.0]]])
    # step 0 (R 1.5): .5 -> .75, token −.2 -> (2 − 1.5)·(−.2) = −.1; step 1 (R 1): −.5 -> (2 − 1)·(−.5) = −.5
    assert close(out.steps, [[[0.75, -0.5]]]) and close(out.token_advantages, [[[[0.75, -0.1], [-0.5]]]])
    assert out.returns == [[[1.0, 2.0]]]


def test_strategy_groups_use_flat_order():
    flat, tree = _won_and_lost(), _won_and_lost()
    tree.trajectories = [[tree.flat[0]], [tree.flat[1]]]  # two strategies, one rollout each
    assert diversity_rewards([tree], cfg()) == diversity_rewards([flat], cfg())


# -- config and driver -----------------------------------------------------------------------------


def test_disabled_adds_nothing():
    g = _won_and_lost()
    adv, metrics = apply_diversity_rewards([g], DiversityRewardConfig(), grpo)
    assert adv == grpo([g]) and metrics == {}
    assert TrainConfig().algo.diversity_rewards == DiversityRewardConfig() and not DiversityRewardConfig().enabled


def test_config_key_parses_and_is_documented():
    c = load_config(TrainConfig, data={"algo": {"diversity_rewards": {"enabled": True, "alpha": 0.5}}},
                    overrides=["algo.diversity_rewards.combine=reward", "algo.diversity_rewards.width_ignore=[look]"])
    d = c.algo.diversity_rewards
    assert (d.enabled, d.alpha, d.combine, d.width_ignore, d.omega) == (True, 0.5, "reward", ["look"], 0.95)
    with pytest.raises(ConfigError, match="algo.diversity_rewards.alpah"):
        load_config(TrainConfig, overrides=["algo.diversity_rewards.alpah=0.5"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(TrainConfig, overrides=["algo.diversity_rewards.combine=sum"])
    rows = describe(TrainConfig)
    assert all(doc for key, _, _, doc in rows if key.startswith("algo.diversity_rewards."))
    table = DOC.split("### `DiversityRewardConfig`", 1)[1].split("###", 1)[0]
    for key, _, default, _ in describe(DiversityRewardConfig):
        assert f"| `{key}` |" in table and f"`{default!r}`" in table, key


def test_driver_stage_applies_and_logs_them():
    c = load_config(TrainConfig, overrides=["algo.diversity_rewards.enabled=true"])
    state = SimpleNamespace(cfg=c, critic=None, ref_model=None)
    groups, log = [_won_and_lost()], rl.IterationLog()
    rl.advantages(state, groups, log)
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert close([s.advantage for t in groups[0].flat for s in t.steps], [1.95 * a, 1.9 * a, -0.05 * a, 0.0])
    assert log.metrics["diversity/penalised_fraction"] == 0.75
    off, log = [_won_and_lost()], rl.IterationLog()
    rl.advantages(SimpleNamespace(cfg=TrainConfig(), critic=None, ref_model=None), off, log)
    assert not any(k.startswith("diversity/") for k in log.metrics)
    assert close([s.advantage for t in off[0].flat for s in t.steps], [a, a, -a, -a])
