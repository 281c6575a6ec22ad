"""DPEPO's step-level diversity rewards: pure functions over a list of `Group`s.

Source: Zhang, Huang, Guo, Li, Shi, Jiang, Yu, Shang and Gao, "DPEPO: Diverse Parallel Exploration
Policy Optimization for LLM-based Agents", arXiv:2604.24320 (April 2026): §3.4 (Eqs. 3-5), §3.5
(Eqs. 7-9) and App. B.2 (coefficients); code github.com/LePanda026/Code-for-DPEPO
(`calculate_penalties` in agent_system/multi_turn_rollout/rollout_loop_parallel.py, and the
`add_step_penalty` branch of `compute_grpo_outcome_advantage` in verl/trainer/ppo/core_algos.py).

    rewards = diversity_rewards(groups, cfg)     # R_step[g][k][t] in (0, R_max]
    adv, metrics = apply_diversity_rewards(groups, cfg, lambda gs: compute_advantages("grpo", gs, acfg))

The paper (one step = one model call acting in K parallel environments E_i):
- Diverse Action Reward (Eq. 3): R_action = (1/|E'_t|)·Σ_i α^{C_depth(E_i, a_t)} + ω^{C_width(A_t)};
  C_depth = earlier repetitions of a_t in environment E_i, C_width = repeated actions among A_t.
- Diverse State Transition Reward (Eq. 4): with the transition p_t = s_t → a_t,
  R_transition = (1/|E'_t|)·Σ_i γ^{M_depth(E_i, p_t)} + (1/|E'_t|)·Σ_i β^{M_width(E_i, p_t)};
  M_depth = earlier recurrences of p_t in E_i, M_width = other environments that saw p_t.
- R_step = (R_action + R_transition)/2 (Eq. 5), in (0, 2]; every term is 1 without repetition.
- Combination (Eqs. 8-9): Φ = Φ_step·Φ_traj with Φ_traj the GRPO advantage of the success reward,
  Φ_step = R_step if Φ_traj > 0, else 2 − R_step.
- App. B.2: α = 0.8, ω = γ = β = 0.95 (the released scripts use ω = 0.8); a step with no parsed
  action gets 0.5 on ScienceWorld (`no_action_penalty`), nothing on ALFWorld.

Our mapping (our choice, not the paper's): the environments E_i are the rollouts of one task
(`Group.flat`); "step t" is the t-th step of each rollout, and E'_t the rollouts that reached it.
Each of our steps is its own model call, so by default (`pool = "rollout"`) each rollout's step gets
its own terms: C_width / M_width count the *other* rollouts at step t that repeat its action /
transition. `pool = "step"` gives every rollout at step t the paper's pooled R_step(A_t) instead.
Where the paper and the released code differ, both are config keys: `terms` (how the four terms are
averaged), `transition_state` (observation or previous action as s_t), `width_count` (rollouts or
occurrences), `width_ignore` (the code leaves `look` out of C_width). Actions and states are compared
in `canonical_action` form (lower case, whitespace collapsed), also our choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..types import Advantages, Group, Trajectory
from .advantages import canonical_action, with_step_penalties

Transition = tuple[str, str] | None
"""(state, action) of a step in canonical form; None where it is undefined (first step, previous-action state)."""


@dataclass
class DiversityRewardConfig:
    """DPEPO's Diverse Action and Diverse State Transition rewards (arXiv:2604.24320), off by default."""

    enabled: bool = False
    """Compute the diversity rewards and combine them with the estimator's advantages (`combine`)."""
    combine: Literal["advantage", "reward"] = "advantage"
    """`advantage` (the paper, Eqs. 8-9): A ← A·R_step if A > 0 else A·(2 − R_step); `reward` (ours):
    coef·(1 − R_step/R_max) is added to each step's penalty before the estimator runs."""
    coef: float = 0.1
    """`reward` mode: the penalty of a step whose four repeat counts are all large (our choice)."""
    alpha: float = 0.8
    """α ∈ (0, 1]: depth-level action repetition, α^(earlier repeats of the action in its own rollout)."""
    omega: float = 0.95
    """ω ∈ (0, 1]: width-level action repetition across rollouts at the same step (paper 0.95, code 0.8)."""
    gamma: float = 0.95
    """γ ∈ (0, 1]: depth-level transition repetition, γ^(earlier repeats of (state, action) in the rollout)."""
    beta: float = 0.95
    """β ∈ (0, 1]: width-level transition repetition, β^(other rollouts that took the same (state, action))."""
    terms: Literal["paper", "code"] = "paper"
    """`paper` (Eq. 5): R = (α^Cd + ω^Cw + γ^Md + β^Mw)/2 ∈ (0, 2]; `code`: R = (ω^Cw + (α^Cd + γ^Md + β^Mw)/3)/2
    ∈ (0, 1], as the released code averages them."""
    transition_state: Literal["observation", "previous_action"] = "observation"
    """The state s_t of a transition s_t → a_t: the observation before the step (`Step.anchor`, the paper)
    or the previous action (the released code; a first step has no transition)."""
    width_count: Literal["rollouts", "occurrences"] = "rollouts"
    """M_width: how many other rollouts took the transition at steps ≤ t (the paper's wording), or how many
    times they took it (the released code)."""
    width_ignore: list[str] = field(default_factory=list)
    """Actions never counted as width-level action repeats (the code ignores `look` on ALFWorld)."""
    pool: Literal["rollout", "step"] = "rollout"
    """`rollout` (ours): each rollout's step has its own terms; `step`: every rollout at step t gets the
    paper's pooled R_step(A_t) (the mean of the rollouts' terms; C_width = the repeated actions among A_t)."""
    invalid_reward: float | None = None
    """R_step of an invalid step (the code's `no_action_penalty`, 0.5 on ScienceWorld); None scores it like
    any other step."""


@dataclass(frozen=True)
class RepeatCounts:
    """How often one step repeats earlier behaviour (0 everywhere = a fully diverse step)."""

    action_depth: int
    """C_depth: earlier steps of the same rollout with the same action."""
    action_width: int
    """C_width: other rollouts whose step t has the same action."""
    transition_depth: int
    """M_depth: earlier steps of the same rollout with the same (state, action)."""
    transition_width: int
    """M_width: other rollouts that took the same (state, action) at a step ≤ t (or how often, `width_count`)."""


# -- counts ----------------------------------------------------------------------------------------


def _keys(t: Trajectory, cfg: DiversityRewardConfig) -> tuple[list[str], list[Transition]]:
    """Canonical actions and transitions of a rollout's steps."""
    actions = [canonical_action(s.action) for s in t.steps]
    if cfg.transition_state == "observation":
        states: list[str | None] = [canonical_action(s.anchor) for s in t.steps]
    else:
        states = [None, *actions[:-1]]
    return actions, [None if s is None else (s, a) for s, a in zip(states, actions, strict=True)]


def _width_transitions(p: Transition, others: Sequence[Sequence[Transition]], cfg: DiversityRewardConfig) -> int:
    if p is None:
        return 0
    if cfg.width_count == "occurrences":
        return sum(prefix.count(p) for prefix in others)
    return sum(p in prefix for prefix in others)


def repeat_counts(g: Group, cfg: DiversityRewardConfig) -> list[list[RepeatCounts]]:
    """`counts[k][t]` for step t of rollout k (`Group.flat` order). Depth counts look at the rollout's own
    steps before t; width counts at the other rollouts that reached step t (their steps ≤ t for
    transitions, their step t for actions)."""
    keys = [_keys(t, cfg) for t in g.flat]
    ignore = {canonical_action(a) for a in cfg.width_ignore}
    out = []
    for k, (acts, trans) in enumerate(keys):
        row = []
        for t, (a, p) in enumerate(zip(acts, trans, strict=True)):
            others = [j for j, (aj, _) in enumerate(keys) if j != k and len(aj) > t]
            row.append(RepeatCounts(
                action_depth=acts[:t].count(a),
                action_width=0 if a in ignore else sum(keys[j][0][t] == a for j in others),
                transition_depth=0 if p is None else trans[:t].count(p),
                transition_width=_width_transitions(p, [keys[j][1][: t + 1] for j in others], cfg)))
        out.append(row)
    return out


# -- rewards ---------------------------------------------------------------------------------------


def max_step_reward(cfg: DiversityRewardConfig) -> float:
    """R_max, the reward of a step that repeats nothing: 2 (`terms = "paper"`) or 1 (`"code"`)."""
    return 2.0 if cfg.terms == "paper" else 1.0


def step_reward(c: RepeatCounts, cfg: DiversityRewardConfig) -> float:
    """R_step of one step from its counts: `paper` (α^Cd + ω^Cw + γ^Md + β^Mw)/2, or `code`
    (ω^Cw + (α^Cd + γ^Md + β^Mw)/3)/2."""
    depth_a, width_a = cfg.alpha ** c.action_depth, cfg.omega ** c.action_width
    depth_p, width_p = cfg.gamma ** c.transition_depth, cfg.beta ** c.transition_width
    if cfg.terms == "paper":
        return (depth_a + width_a + depth_p + width_p) / 2
    return (width_a + (depth_a + depth_p + width_p) / 3) / 2


def _pooled(g: Group, counts: list[list[RepeatCounts]], cfg: DiversityRewardConfig) -> list[list[float]]:
    """`pool = "step"`: every rollout at step t gets the mean over those rollouts of `step_reward`, with
    the width-level action count of the whole step, |A_t| − |set(A_t)| (ignored actions left out)."""
    ignore = {canonical_action(a) for a in cfg.width_ignore}
    out = [[0.0] * len(row) for row in counts]
    for t in range(max(map(len, counts), default=0)):
        alive = [k for k, row in enumerate(counts) if len(row) > t]
        acts = [a for k in alive if (a := canonical_action(g.flat[k].steps[t].action)) not in ignore]
        shared = len(acts) - len(set(acts))
        r = sum(step_reward(dataclasses.replace(counts[k][t], action_width=shared), cfg) for k in alive) / len(alive)
        for k in alive:
            out[k][t] = r
    return out


def _check(cfg: DiversityRewardConfig) -> None:
    for key in ("alpha", "omega", "gamma", "beta"):
        v = getattr(cfg, key)
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"diversity_rewards.{key} must be in (0, 1] (a discount per repeat), got {v}")
    if cfg.coef < 0:
        raise ConfigError(f"diversity_rewards.coef must be >= 0 (a penalty size), got {cfg.coef}")


def diversity_rewards(groups: list[Group], cfg: DiversityRewardConfig) -> list[list[list[float]]]:
    """R_step[g][k][t] ∈ (0, R_max] for step t of rollout k (`Group.flat` order) of group g: `step_reward`
    of its `repeat_counts` (or the step's pooled value, `pool = "step"`); an invalid step gets
    `invalid_reward` when that is set."""
    _check(cfg)
    out = []
    for g in groups:
        counts = repeat_counts(g, cfg)
        r = _pooled(g, counts, cfg) if cfg.pool == "step" else [[step_reward(c, cfg) for c in row] for row in counts]
        if cfg.invalid_reward is not None:
            r = [[cfg.invalid_reward if not s.valid else x for s, x in zip(t.steps, row, strict=True)]
                 for t, row in zip(g.flat, r, strict=True)]
        out.append(r)
    return out


# -- combination with the success reward -----------------------------------------------------------


def diversity_penalties(rewards: list[list[list[float]]], cfg: DiversityRewardConfig) -> list[list[list[float]]]:
    """`combine = "reward"`: coef·(1 − R_step/R_max) per step (0 for a step that repeats nothing), the
    `extra` of `with_step_penalties`; zeros in `advantage` mode."""
    scale = cfg.coef if cfg.combine == "reward" else 0.0
    r_max = max_step_reward(cfg)
    return [[[scale * (1.0 - x / r_max) for x in row] for row in g] for g in rewards]


def dpepo_factor(advantage: float, reward: float) -> float:
    """Φ_step (Eq. 8): R_step where the advantage is positive, 2 − R_step otherwise."""
    return reward if advantage > 0 else 2.0 - reward


def scale_advantages(adv: Advantages, rewards: list[list[list[float]]]) -> Advantages:
    """`combine = "advantage"` (Eq. 9): A_t ← Φ_step·A_t for every step (and every token of the step, for
    token-level estimators, each by its own sign); strategy advantages and critic targets are unchanged."""
    steps = [[[dpepo_factor(a, r) * a for a, r in zip(av, rv, strict=True)] for av, rv in zip(ga, gr, strict=True)]
             for ga, gr in zip(adv.steps, rewards, strict=True)]
    tokens = None
    if adv.token_advantages is not None:
        tokens = [[[[dpepo_factor(x, r) * x for x in tok] for tok, r in zip(tv, rv, strict=True)]
                   for tv, rv in zip(gt, gr, strict=True)] for gt, gr in zip(adv.token_advantages, rewards, strict=True)]
    return dataclasses.replace(adv, steps=steps, token_advantages=tokens)


def diversity_metrics(groups: list[Group], rewards: list[list[list[float]]], cfg: DiversityRewardConfig
                      ) -> dict[str, float]:
    """Per-iteration logs: mean R_step, the fraction of steps below R_max (penalised), the mean `reward`-mode
    penalty, and the paper's exploration diversity (unique actions / actions of a group, mean over groups)."""
    flat = [x for g in rewards for row in g for x in row]
    r_max = max_step_reward(cfg)
    penalties = [x for g in diversity_penalties(rewards, cfg) for row in g for x in row]
    unique = [len(set(acts)) / len(acts) for g in groups
              if (acts := [canonical_action(s.action) for t in g.flat for s in t.steps])]
    return {"diversity/step_reward_mean": _mean(flat), "diversity/penalised_fraction": _mean([x < r_max for x in flat]),
            "diversity/penalty_mean": _mean(penalties), "diversity/unique_action_fraction": _mean(unique)}


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def apply_diversity_rewards(groups: list[Group], cfg: DiversityRewardConfig,
                            estimate: Callable[[list[Group]], Advantages]) -> tuple[Advantages, dict[str, float]]:
    """Run the advantage estimator `estimate` with the diversity rewards combined as `cfg.combine` says
    (`reward`: penalties into copies of the groups first; `advantage`: its output scaled by Eq. 9), and
    return the advantages with `diversity_metrics`. Disabled: `estimate(groups)` and no metrics."""
    if not cfg.enabled:
        return estimate(groups), {}
    rewards = diversity_rewards(groups, cfg)
    if cfg.combine == "reward":
        adv = estimate(with_step_penalties(groups, diversity_penalties(rewards, cfg)))
    else:
        adv = scale_advantages(estimate(groups), rewards)
    return adv, diversity_metrics(groups, rewards, cfg)
