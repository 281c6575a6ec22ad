"""ECPO against numbers worked out by hand (the arithmetic is in the comments).

Unless a test says otherwise the groups are one-step rollouts, so a step's return is its outcome
(γ plays no part), and `_step_only` leaves out the episode level and divides by 1 (`mean_norm`).
"""

import dataclasses

import pytest

from stratarl.algos.advantages import (
    ESTIMATORS,
    AdvantageConfig,
    ECPOOptions,
    anchor_credit,
    canonical_action,
    compute_advantages,
    ecpo,
    variance_gate,
)
from stratarl.config import describe, load_config
from stratarl.errors import UnknownNameError
from stratarl.types import Group, Step, Task, Trajectory

TASK = Task(env="twx:coin", split="train", index=0, seed=0)
EPS = 1e-6


def traj(outcome, actions, anchors=None, penalties=()):
    steps = [Step(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], text="", action=a,
                  anchor=(anchors or ["s0"] * len(actions))[i], penalty=dict(penalties).get(i, 0.0))
             for i, a in enumerate(actions)]
    return Trajectory(task=TASK, steps=steps, outcome=outcome, termination="success")


def group(*trajs):
    return Group(task=TASK, trajectories=[list(trajs)])


def one_step_group(*pairs):
    """(action, outcome) pairs: one rollout each, all starting from anchor s0."""
    return group(*[traj(r, [a]) for a, r in pairs])


def cfg(**ecpo_opts):
    return AdvantageConfig(ecpo=ECPOOptions(**ecpo_opts))


def _step_only(**kw):
    return cfg(**{"episode": False, "norm": "mean_norm", **kw})


def firsts(adv, g=0):
    return [row[0] for row in adv.steps[g]]


# -- canonical actions -----------------------------------------------------------------------------


def test_canonical_action():
    assert canonical_action("  Take   the KEY\t") == "take the key"
    assert canonical_action("go\nnorth") == "go north"
    assert canonical_action("") == "" and canonical_action("   ") == ""
    assert canonical_action("take key") != canonical_action("take keys")  # nothing beyond case/whitespace


# -- evidence-calibrated shrinkage -----------------------------------------------------------------


def _uneven_anchor():
    # anchor s0: action "open door" 3 times with returns [1, 0, 0] (mean 1/3), "take key" once with
    # return 1; the spellings differ only in case and spaces, so they canonicalise to two actions.
    # anchor mean μ = 2/4 = .5
    return one_step_group(("open door", 1), ("Open Door", 0), ("open  door", 0), ("take key", 1))


def test_shrinkage_toward_the_anchor_mean():
    a = compute_advantages("ecpo", [_uneven_anchor()], _step_only(k=1.0, gate="off"))
    # open door: Q̃ = (3·1/3 + 1·.5)/(3 + 1) = .375 -> A = .375 - .5 = -.125   (= 3/4 · (1/3 - .5))
    # take key:  Q̃ = (1·1 + 1·.5)/(1 + 1) = .75   -> A = .75 - .5  = .25     (= 1/2 · (1 - .5))
    assert firsts(a) == pytest.approx([-0.125, -0.125, -0.125, 0.25])
    # k = 0: the raw action means, -1/6 and +.5: the single lucky "take key" is shrunk by half with
    # k = 1 but the 3-count action only by a quarter
    raw = compute_advantages("ecpo", [_uneven_anchor()], _step_only(k=0.0, gate="off"))
    assert firsts(raw) == pytest.approx([-1 / 6, -1 / 6, -1 / 6, 0.5])
    # k = 3: take key keeps 1/4 of .5 = .125; open door keeps 1/2 of -1/6 = -1/12
    strong = compute_advantages("ecpo", [_uneven_anchor()], _step_only(k=3.0, gate="off"))
    assert firsts(strong) == pytest.approx([-1 / 12, -1 / 12, -1 / 12, 0.125])


def test_shrinkage_with_std_normalisation():
    # anchor returns [1, 0, 0, 1]: mean .5, unbiased std sqrt(4 · .25 / 3) = .57735
    # -> -.125 / .57735 = -.216506 and .25 / .57735 = .433013
    a = compute_advantages("ecpo", [_uneven_anchor()], cfg(episode=False, gate="off", norm="mean_std_norm"))
    assert firsts(a) == pytest.approx([-0.216506, -0.216506, -0.216506, 0.433013], abs=1e-5)


# -- variance gate ---------------------------------------------------------------------------------


def _noisy_anchor():
    # a: [1, 0, 0] (mean 1/3), b: [1, 0, 1] (mean 2/3); μ = .5, N = 6
    # B = (3 · (1/6)² + 3 · (1/6)²)/6 = 1/36
    # W = ((2/3)² + (1/3)² + (1/3)² + (1/3)² + (2/3)² + (1/3)²)/6 = (4/3)/6 = 8/36
    # ρ = B/(B + W + ε) = (1/36)/(9/36 + 1e-6) = .1111107 ≈ 1/9: within-action noise dominates
    return one_step_group(("a", 1), ("a", 0), ("a", 0), ("b", 1), ("b", 0), ("b", 1))


def _clean_anchor():
    # a: [1, 1, 1], b: [0, 0, 0]; μ = .5, B = .25, W = 0 -> ρ = .25/(.25 + 1e-6) = .999996
    return one_step_group(("a", 1), ("a", 1), ("a", 1), ("b", 0), ("b", 0), ("b", 0))


def test_gate_weight_small_for_noise_near_one_for_clean_separation():
    o = ECPOOptions()
    assert variance_gate([[1, 0, 0], [1, 0, 1]], o, EPS) == pytest.approx(1 / 9, abs=1e-6)
    assert variance_gate([[1, 1, 1], [0, 0, 0]], o, EPS) == pytest.approx(0.999996, abs=1e-7)
    a = compute_advantages("ecpo", [_noisy_anchor(), _clean_anchor()], _step_only(k=0.0))
    # noisy: w · (mean_a - μ) = 1/9 · ∓1/6 = ∓1/54 = ∓.0185185
    assert firsts(a, 0) == pytest.approx([-1 / 54] * 3 + [1 / 54] * 3, abs=1e-6)
    # clean: .999996 · ±.5 = ±.499998
    assert firsts(a, 1) == pytest.approx([0.499998] * 3 + [-0.499998] * 3, abs=1e-6)
    # k = 1 on the noisy anchor multiplies by 3/(3+1): 1/9 · 3/4 · -1/6 = -1/72
    k1 = compute_advantages("ecpo", [_noisy_anchor()], _step_only(k=1.0))
    assert firsts(k1)[0] == pytest.approx(-1 / 72, abs=1e-6)


def test_sigmoid_and_threshold_gates():
    noisy, clean = [[1, 0, 0], [1, 0, 1]], [[1, 1, 1], [0, 0, 0]]
    thr = ECPOOptions(gate="threshold", gate_threshold=0.5)
    assert variance_gate(noisy, thr, EPS) == 0.0 and variance_gate(clean, thr, EPS) == 1.0
    sig = ECPOOptions(gate="sigmoid", gate_threshold=0.5, gate_temperature=0.1)
    # noisy: σ((.1111107 - .5)/.1) = σ(-3.888893) = 1/(1 + e^3.888893) = 1/(1 + 48.857) = .0200574
    assert variance_gate(noisy, sig, EPS) == pytest.approx(0.0200574, abs=1e-6)
    # clean: σ((.999996 - .5)/.1) = σ(4.99996) = 1/(1 + e^-4.99996) = .9933069
    assert variance_gate(clean, sig, EPS) == pytest.approx(0.9933069, abs=1e-6)
    # a very sharp sigmoid does not overflow
    sharp = ECPOOptions(gate="sigmoid", gate_threshold=0.5, gate_temperature=1e-6)
    assert variance_gate(noisy, sharp, EPS) == 0.0 and variance_gate(clean, sharp, EPS) == 1.0
    assert variance_gate(noisy, ECPOOptions(gate="off"), EPS) == 1.0


# -- degenerate anchors ----------------------------------------------------------------------------


def test_equal_returns_give_exactly_zero():
    # every rollout: 2 steps, outcome .1, same anchors -> step returns [.095, .1] everywhere and R = .1;
    # the actions differ, but with equal returns every action mean equals the anchor mean exactly
    g = group(traj(0.1, ["a", "b"], ["s0", "s1"]), traj(0.1, ["B", "c"], ["s0", "s1"]),
              traj(0.1, ["c", "a"], ["s0", "s1"]), traj(0.1, ["a", "a"], ["s0", "s1"]))
    for gate in ("ratio", "sigmoid", "threshold", "off"):
        for norm in ("mean_std_norm", "mean_norm"):
            a = compute_advantages("ecpo", [g], cfg(gate=gate, norm=norm))
            assert all(x == 0.0 for row in a.steps[0] for x in row), (gate, norm)


def test_single_action_and_singleton_anchors_give_zero_step_credit():
    # one action at the anchor: its mean is the anchor mean -> 0 whatever k and the gate
    assert anchor_credit([1.0, 0.0, 1.0], ["a", "a", "a"], ECPOOptions(gate="off", k=0.0), EPS) == [0.0] * 3
    assert anchor_credit([0.7], ["a"], ECPOOptions(), EPS) == [0.0] and anchor_credit([], [], ECPOOptions(), EPS) == []


# -- reductions ------------------------------------------------------------------------------------


def test_k0_gate_off_is_per_action_mean_minus_anchor_mean():
    # anchor s0 returns by action: x [3, 1] (mean 2), y [0] (mean 0), z [4, 4, 1] (mean 3)
    # μ = (3 + 1 + 0 + 4 + 4 + 1)/6 = 13/6 -> x: 2 - 13/6 = -1/6, y: -13/6, z: 3 - 13/6 = 5/6
    xs, acts = [3.0, 0.0, 4.0, 1.0, 4.0, 1.0], ["x", "y", "z", "x", "z", "z"]
    got = anchor_credit(xs, acts, ECPOOptions(k=0.0, gate="off", norm="mean_norm"), EPS)
    assert got == pytest.approx([-1 / 6, -13 / 6, 5 / 6, -1 / 6, 5 / 6, 5 / 6])


def test_distinct_actions_k0_gate_off_equals_gigpo():
    # each anchor occurrence has its own action, so every action mean is one return: with k = 0 and the
    # gate off ECPO's step level is GiGPO's (R_t - mean_anchor)/F, at both normalisations
    g = group(traj(1, ["go east", "take coin"], ["start", "hall"], penalties={0: 0.1}),
              traj(0, ["go west", "look"], ["start", "cellar"]),
              traj(0, ["go north", "take gem"], ["start", "hall"]))
    for norm in ("mean_std_norm", "mean_norm"):
        e = compute_advantages("ecpo", [g], cfg(k=0.0, gate="off", norm=norm))
        gi = compute_advantages("gigpo", [g], dataclasses.replace(AdvantageConfig(), gigpo=dataclasses.replace(
            AdvantageConfig().gigpo, norm=norm)))
        assert e.steps == [[pytest.approx(row) for row in gi.steps[0]]]


# -- the whole estimator ---------------------------------------------------------------------------


def test_ecpo_with_episode_level_and_discounted_returns():
    # γ = .5, mean_norm, k = 1, gate = ratio, ω = 1
    # A: anchors s0, s1, actions "open door", "go east", outcome 1 -> rewards [0, 1] -> returns [.5, 1]
    # B: anchors s0, s2, actions "Open  Door", "x",     outcome 0 -> returns [0, 0]
    # C: anchor s0, action "look", outcome 0 -> returns [0]
    g = group(traj(1, ["open door", "go east"], ["s0", "s1"]), traj(0, ["Open  Door", "x"], ["s0", "s2"]),
              traj(0, ["look"], ["s0"]))
    a = compute_advantages("ecpo", [g], cfg(gamma=0.5, norm="mean_norm"))
    # A^E: R = [1, 0, 0], mean 1/3 -> [2/3, -1/3, -1/3]
    # anchor s0: open door [.5, 0] (mean .25, n 2), look [0] (n 1); μ = .5/3 = 1/6
    #   B = (2 · (1/12)² + (1/6)²)/3 = (1/24)/3 = 1/72; W = (2 · .25²)/3 = 1/24 = 3/72
    #   w = (1/72)/(4/72 + 1e-6) = .2499955
    #   open door: w · 2/3 · (.25 - 1/6) = w · 1/18 = .0138886;  look: w · 1/2 · (0 - 1/6) = -w/12 = -.0208330
    # s1, s2: singletons -> 0
    assert a.steps[0][0] == pytest.approx([2 / 3 + 0.0138886, 2 / 3], abs=1e-6)
    assert a.steps[0][1] == pytest.approx([-1 / 3 + 0.0138886, -1 / 3], abs=1e-6)
    assert a.steps[0][2] == pytest.approx([-1 / 3 - 0.0208330], abs=1e-6)
    # ω = 2 doubles the step-level term; episode = False leaves it alone
    w2 = compute_advantages("ecpo", [g], cfg(gamma=0.5, norm="mean_norm", omega=2.0))
    assert w2.steps[0][2] == pytest.approx([-1 / 3 - 2 * 0.0208330], abs=1e-6)
    alone = compute_advantages("ecpo", [g], cfg(gamma=0.5, norm="mean_norm", episode=False))
    assert alone.steps[0] == [pytest.approx([0.0138886, 0.0], abs=1e-6), pytest.approx([0.0138886, 0.0], abs=1e-6),
                              pytest.approx([-0.0208330], abs=1e-6)]
    assert a.strategies == []


def test_similarity_anchors():
    # the two first anchors differ in case and punctuation only: separate under `exact` (singletons,
    # no step credit), one anchor under `similarity` (Jaccard 1)
    g = group(traj(1, ["a"], ["You are in the kitchen."]), traj(0, ["b"], ["you are in the kitchen"]))
    exact = compute_advantages("ecpo", [g], _step_only(k=0.0, gate="off"))
    sim = compute_advantages("ecpo", [g], _step_only(k=0.0, gate="off", anchors="similarity"))
    assert firsts(exact) == [0.0, 0.0] and firsts(sim) == pytest.approx([0.5, -0.5])


def test_negative_k_is_an_error():
    with pytest.raises(ValueError, match="ecpo.k"):
        compute_advantages("ecpo", [_uneven_anchor()], cfg(k=-1.0))


# -- registry and config ---------------------------------------------------------------------------


def test_registry_resolves_ecpo_and_names_the_closest():
    assert ESTIMATORS["ecpo"] is ecpo
    assert compute_advantages("ecpo", [_uneven_anchor()], _step_only(gate="off")).steps == \
        ecpo([_uneven_anchor()], _step_only(gate="off")).steps
    with pytest.raises(UnknownNameError, match="'ecpo'"):
        compute_advantages("ecp0", [], AdvantageConfig())
    with pytest.raises(UnknownNameError, match="'gigpo'"):
        compute_advantages("gigpo2", [], AdvantageConfig())


def test_options_are_documented_config_keys():
    rows = {k: (d, doc) for k, _, d, doc in describe(AdvantageConfig) if k.startswith("ecpo.")}
    assert rows["ecpo.k"][0] == 1.0 and rows["ecpo.gate"][0] == "ratio" and rows["ecpo.gamma"][0] == 0.95
    assert all(doc for _, doc in rows.values())
    c = load_config(AdvantageConfig, overrides=["ecpo.k=2.5", "ecpo.gate=sigmoid", "ecpo.episode=false"])
    assert c.ecpo.k == 2.5 and c.ecpo.gate == "sigmoid" and c.ecpo.episode is False
