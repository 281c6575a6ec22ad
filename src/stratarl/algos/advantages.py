"""Advantage estimators: pure functions over a list of `Group`s, chosen by name from `ESTIMATORS`.

    adv = compute_advantages("strata", groups, AdvantageConfig())
    adv.steps[g][k][t]      # step t of the k-th rollout (`Group.flat` order) of group g
    adv.strategies[g][i]    # strategy i of group g (StraTA only; `[]` for the other estimators)

Definitions follow ALGORITHMS.md; every choice it names is an option of `AdvantageConfig`.
docs/algorithms.md lists each formula as implemented.

Conventions
- Trajectory return (GRPO, Dr.GRPO, RLOO, REINFORCE++, GiGPO/ECPO episode level, StraTA, MT-GRPO A^O):
  R = outcome − Σ_t penalty_t when `penalties_in_return`, else the outcome. `Step.penalty` holds the
  runner's invalid-action and format penalties (positive numbers).
- Per-step reward (GiGPO/ECPO step returns, step-GAE, token GAE): r_t = base_t − penalty_t, where base_t
  is the outcome on the last step and 0 before it (`step_reward="outcome"`), or the env's own step
  reward (`"env"`). MT-GRPO's turn reward is base_t alone (before penalties).
- The self-judgment flag (`Step.judged`) costs κ only inside the StraTA estimator; it is never a
  `Step.penalty`.
- Normalisation is (x − mean) / (std + ε), std unbiased (Bessel), ε = 1e-6. Fewer than two values give
  0, and equal values give exactly 0 (the numerator is 0): nothing is ever NaN or infinite.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import lookup
from ..types import Advantages, Group, Trajectory

TERMINAL = ("success", "env_done")
"""Terminations after which the value of the next state is 0 (the environment ended the episode)."""


@dataclass
class GRPOOptions:
    """GRPO / Dr.GRPO."""

    norm_by_std: bool = True
    """Divide by the group std (GRPO); False gives Dr.GRPO (A = R − mean), same as estimator `drgrpo`."""


@dataclass
class ReinforcePPOptions:
    """REINFORCE++ with a group baseline."""

    batch_stats: Literal["trajectories", "step_rows"] = "trajectories"
    """Batch normalisation over one value per trajectory, or over step rows (a trajectory counts once
    per step, as token/row-level whitening in verl does)."""


@dataclass
class GiGPOOptions:
    """GiGPO: episode-level plus anchor-state step-level advantages."""

    omega: float = 1.0
    """ω, weight of the step-level advantage A^S."""
    gamma: float = 0.95
    """γ of the discounted step returns R_t = Σ_k γ^k r_{t+k}."""
    norm: Literal["mean_std_norm", "mean_norm"] = "mean_std_norm"
    """F = the std (`mean_std_norm`) or 1 (`mean_norm`), at both levels."""
    anchors: Literal["exact", "similarity"] = "exact"
    """Anchor groups: identical anchor observations, or greedy clustering by similarity."""
    similarity: float = 0.95
    """Threshold of the `similarity` anchors (token-set Jaccard similarity of the observations)."""
    episode_stats: Literal["trajectories", "step_rows"] = "trajectories"
    """Episode-level mean/std over trajectories, or over step rows (verl-agent's variant)."""


@dataclass
class ECPOOptions:
    """ECPO (arXiv:2606.05885): GiGPO's anchor states with evidence-calibrated, variance-gated step credit."""

    k: float = 1.0
    """Shrinkage pseudo-count k ≥ 0: an action seen n_a times at an anchor keeps n_a/(n_a + k) of its
    deviation from the anchor mean (0 = no shrinkage). The paper's value is not public; 1 is our choice."""
    gate: Literal["ratio", "sigmoid", "threshold", "off"] = "ratio"
    """Anchor weight from ρ = B/(B + W + ε) (between- and within-action variance): `ratio` w = ρ;
    `sigmoid` w = σ((ρ − θ)/τ); `threshold` w = 1 if ρ ≥ θ else 0; `off` w = 1. The paper's exact gate
    is not public."""
    gate_threshold: float = 0.5
    """θ of the `sigmoid` and `threshold` gates."""
    gate_temperature: float = 0.1
    """τ > 0 of the `sigmoid` gate."""
    omega: float = 1.0
    """ω, weight of the step-level advantage."""
    episode: bool = True
    """Add GiGPO's episode-level advantage A^E (False: the calibrated step-level term alone)."""
    gamma: float = 0.95
    """γ of the discounted step returns R_t = Σ_k γ^k r_{t+k}."""
    norm: Literal["mean_std_norm", "mean_norm"] = "mean_std_norm"
    """Divide by the std of the anchor's step returns (and A^E by the group std), or by 1 (`mean_norm`)."""
    anchors: Literal["exact", "similarity"] = "exact"
    """Anchor groups: identical anchor observations, or greedy clustering by similarity (as GiGPO)."""
    similarity: float = 0.95
    """Threshold of the `similarity` anchors (token-set Jaccard similarity of the observations)."""
    episode_stats: Literal["trajectories", "step_rows"] = "trajectories"
    """A^E mean/std over trajectories, or over step rows (as GiGPO)."""


@dataclass
class StraTAOptions:
    """StraTA's hierarchical advantages (seed 000)."""

    delta: float = 0.5
    """δ: the strategy reward averages the top ⌈δ·M⌉ rollout returns (or weighs `mix`)."""
    strategy_reward: Literal["top_delta", "mix"] = "top_delta"
    """`top_delta` (the paper) or `mix`: δ·mean + (1−δ)·max (an unofficial variant)."""
    kappa: float = 0.1
    """κ, the penalty of a step flagged by the self-judge."""
    judge_penalty_into: Literal["reward", "advantage"] = "reward"
    """`reward`: −κ enters the step's reward before normalisation; `advantage`: subtracted from the
    normalised advantage (unofficial)."""
    stats_over: Literal["steps", "trajectories"] = "steps"
    """`reward` mode: mean/std over all step rows of the strategy's rollouts (A = 0 whenever all rows
    agree), or over the M trajectory returns (exactly GRPO when κ = 0, but −κ/ε ≈ −1e5 on a judged step
    when those returns are all equal)."""


@dataclass
class GAEOptions:
    """Step-GAE (StepPO) and token-level GAE (classic PPO)."""

    gamma: float = 0.99
    """γ."""
    lam: float = 1.0
    """λ."""
    whiten: bool = True
    """Whiten the advantages over the batch: over steps (step-GAE) or over tokens (token GAE)."""
    bootstrap_truncated: bool = True
    """An episode that did not terminate (termination other than success/env_done and last step not
    done: max_steps, context overflow, timeout, parse_error) bootstraps with its last value; else 0."""


@dataclass
class MTGRPOOptions:
    """MT-GRPO: outcome plus turn-level group-normalised advantages."""

    lam: float = 1.0
    """λ, weight of the turn-level advantage A^T."""


@dataclass
class AdvantageConfig:
    """Options of every advantage estimator."""

    penalties_in_return: bool = True
    """Subtract the steps' penalties (invalid action, format) from the trajectory return R."""
    trajectory_reward: Literal["outcome", "score"] = "outcome"
    """The trajectory return's base: the outcome (won → 1, TextWorldExpress), or `score`, the sum of the
    env's step rewards — a game's final score, so a lost game that took the right ingredient counts for
    something (an addition to ALGORITHMS.md)."""
    step_reward: Literal["outcome", "env"] = "outcome"
    """Per-step reward base: the outcome on the last step (0 before), or the env's step rewards."""
    eps: float = 1e-6
    """ε in (x − mean) / (std + ε)."""
    invalid_steps: Literal["estimator", "nonpositive"] = "estimator"
    """`estimator`: an invalid step keeps the advantage the estimator gave it; `nonpositive`: A ← min(A, 0)
    on invalid steps, so an inadmissible action in a won episode is never pushed up (an addition to
    ALGORITHMS.md; see `cap_invalid`)."""
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    """GRPO / Dr.GRPO."""
    reinforce_pp: ReinforcePPOptions = field(default_factory=ReinforcePPOptions)
    """REINFORCE++."""
    gigpo: GiGPOOptions = field(default_factory=GiGPOOptions)
    """GiGPO."""
    ecpo: ECPOOptions = field(default_factory=ECPOOptions)
    """ECPO."""
    strata: StraTAOptions = field(default_factory=StraTAOptions)
    """StraTA."""
    gae: GAEOptions = field(default_factory=GAEOptions)
    """Step-GAE and token GAE."""
    mt_grpo: MTGRPOOptions = field(default_factory=MTGRPOOptions)
    """MT-GRPO."""


# -- small pieces ----------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float:
    """The mean; an all-equal list has its value as the mean exactly (a summed mean can be off by one
    rounding, which ε would blow up to a spurious ~1e-10 advantage). Needs at least one value."""
    return xs[0] if min(xs) == max(xs) else math.fsum(xs) / len(xs)


def normalize_with(xs: Sequence[float], pool: Sequence[float], eps: float, by_std: bool = True) -> list[float]:
    """(x − mean(pool)) / (std(pool) + ε) for each x; zeros when the pool has fewer than two values.
    The mean of an all-equal pool is exact (`_mean`)."""
    n = len(pool)
    if n < 2:
        return [0.0] * len(xs)
    mean = _mean(pool)
    if not by_std:
        return [x - mean for x in xs]
    std = math.sqrt(sum((p - mean) ** 2 for p in pool) / (n - 1))
    return [(x - mean) / (std + eps) for x in xs]


def normalize(xs: Sequence[float], eps: float, by_std: bool = True) -> list[float]:
    """(x − mean) / (std + ε) with the unbiased std; `by_std=False` only centres."""
    return normalize_with(xs, xs, eps, by_std)


def trajectory_return(t: Trajectory, cfg: AdvantageConfig) -> float:
    """R = base − Σ_t penalty_t (`penalties_in_return`), else the base; base = the outcome, or the sum of
    the step rewards (`trajectory_reward = "score"`)."""
    base = math.fsum(s.reward for s in t.steps) if cfg.trajectory_reward == "score" else t.outcome
    return base - (sum(s.penalty for s in t.steps) if cfg.penalties_in_return else 0.0)


def step_bases(t: Trajectory, cfg: AdvantageConfig) -> list[float]:
    """base_t: the outcome on the last step and 0 before (`outcome`), or the env's step rewards (`env`)."""
    if cfg.step_reward == "env":
        return [s.reward for s in t.steps]
    last = len(t.steps) - 1
    return [t.outcome if i == last else 0.0 for i in range(len(t.steps))]


def step_rewards(t: Trajectory, cfg: AdvantageConfig) -> list[float]:
    """r_t = base_t − penalty_t."""
    return [b - s.penalty for b, s in zip(step_bases(t, cfg), t.steps, strict=True)]


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_t = Σ_k γ^k r_{t+k}."""
    out, acc = [0.0] * len(rewards), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        acc = rewards[i] + gamma * acc
        out[i] = acc
    return out


def _flatten(nested: Any) -> list[float]:
    return [x for item in nested for x in _flatten(item)] if isinstance(nested, list) else [nested]


def _unflatten(flat: Sequence[float], like: Any) -> Any:
    """`flat` poured back into the nesting of `like` (nested lists of floats)."""
    it = iter(flat)

    def build(x: Any) -> Any:
        return [build(y) for y in x] if isinstance(x, list) else next(it)

    return build(like)


def _broadcast(groups: list[Group], per_traj: list[list[float]]) -> list[list[list[float]]]:
    """Every step of trajectory k gets the trajectory's advantage."""
    return [[[a] * len(t.steps) for t, a in zip(g.flat, adv, strict=True)]
            for g, adv in zip(groups, per_traj, strict=True)]


def _returns(g: Group, cfg: AdvantageConfig) -> list[float]:
    return [trajectory_return(t, cfg) for t in g.flat]


# -- outcome-level estimators ----------------------------------------------------------------------


def grpo(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """A_k = (R_k − mean_G R) / (std_G R + ε) (`grpo.norm_by_std=False`: R_k − mean_G R); every step of
    trajectory k gets A_k."""
    per = [normalize(_returns(g, cfg), cfg.eps, cfg.grpo.norm_by_std) for g in groups]
    return Advantages(steps=_broadcast(groups, per))


def drgrpo(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """Dr.GRPO: A_k = R_k − mean_G R."""
    return grpo(groups, dataclasses.replace(cfg, grpo=GRPOOptions(norm_by_std=False)))


def rloo(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """A_k = R_k − (Σ_{j≠k} R_j) / (G − 1); a group of one gets 0."""
    per = []
    for g in groups:
        r = _returns(g, cfg)
        n, total = len(r), sum(r)
        per.append([x - (total - x) / (n - 1) if n > 1 else 0.0 for x in r])
    return Advantages(steps=_broadcast(groups, per))


def reinforce_pp(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """REINFORCE++ (group baseline): c_k = R_k − mean_G R, then A_k = (c_k − mean_B c) / (std_B c + ε)
    over the whole batch B of trajectories (or of step rows, `reinforce_pp.batch_stats`)."""
    centred = [normalize(_returns(g, cfg), cfg.eps, by_std=False) for g in groups]
    flat = _flatten(centred)
    if cfg.reinforce_pp.batch_stats == "step_rows":
        pool = [c for g, cs in zip(groups, centred, strict=True)
                for t, c in zip(g.flat, cs, strict=True) for _ in t.steps]
    else:
        pool = flat
    return Advantages(steps=_broadcast(groups, _unflatten(normalize_with(flat, pool, cfg.eps), centred)))


# -- GiGPO -----------------------------------------------------------------------------------------

_WORDS = re.compile(r"\w+")


def jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| over the sets of lower-cased word tokens (two empty texts: 1)."""
    sa, sb = set(_WORDS.findall(a.lower())), set(_WORDS.findall(b.lower()))
    return 1.0 if not sa and not sb else len(sa & sb) / len(sa | sb)


def anchor_groups(anchors: Sequence[str], mode: str, threshold: float) -> list[int]:
    """A cluster id per step. `exact`: identical text. `similarity`: greedy leader clustering — each
    anchor, in order, joins the first cluster whose first member is ≥ `threshold` Jaccard-similar,
    else starts a new cluster."""
    if mode == "exact":
        ids: dict[str, int] = {}
        return [ids.setdefault(a, len(ids)) for a in anchors]
    leaders: list[str] = []
    out = []
    for a in anchors:
        hit = next((c for c, head in enumerate(leaders) if jaccard(a, head) >= threshold), None)
        if hit is None:
            leaders.append(a)
            hit = len(leaders) - 1
        out.append(hit)
    return out


def _normalize_within(xs: list[float], keys: list[int], eps: float, by_std: bool) -> list[float]:
    """Normalise each x against the other members of its key's cluster (a singleton gives 0)."""
    members: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    out = [0.0] * len(xs)
    for idx in members.values():
        for i, a in zip(idx, normalize([xs[i] for i in idx], eps, by_std), strict=True):
            out[i] = a
    return out


def _episode_advantages(g: Group, cfg: AdvantageConfig, stats: str, by_std: bool) -> list[float]:
    """A^E per trajectory, with statistics over trajectories or over step rows (`stats`)."""
    r = _returns(g, cfg)
    pool = r if stats == "trajectories" else [x for x, t in zip(r, g.flat, strict=True) for _ in t.steps]
    return normalize_with(r, pool, cfg.eps, by_std)


def gigpo(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """A_t = A^E(τ) + ω·A^S_t. A^E = (R(τ) − mean_G R)/F; A^S_t = (R_t − mean_anchor R_t)/F with R_t the
    γ-discounted return of the per-step rewards, the mean over the steps of the task group whose anchor
    observation matches (exactly, or by similarity); F = std (`mean_std_norm`) or 1 (`mean_norm`)."""
    o = cfg.gigpo
    out = []
    for g in groups:
        episode = _episode_advantages(g, cfg, o.episode_stats, o.norm == "mean_std_norm")
        returns = [discounted_returns(step_rewards(t, cfg), o.gamma) for t in g.flat]
        keys = anchor_groups([s.anchor for t in g.flat for s in t.steps], o.anchors, o.similarity)
        step_adv = _unflatten(_normalize_within(_flatten(returns), keys, cfg.eps, o.norm == "mean_std_norm"),
                              returns)
        out.append([[a_e + o.omega * a_s for a_s in row] for a_e, row in zip(episode, step_adv, strict=True)])
    return Advantages(steps=out)


# -- ECPO ------------------------------------------------------------------------------------------
#
# Source: Li, Zhou, Duan, Chen, "When Denser Credit Is Not Enough: Evidence-Calibrated Policy
# Optimization for Long-Horizon LLM Agent Training", arXiv:2606.05885v1 (June 2026). What is public
# (the abstract and §1 of the HTML version, and third-party summaries): ECPO keeps GiGPO's anchor
# states; "Evidence-Calibrated Action Advantage" groups the rollouts at an anchor by *canonical action*
# and shrinks low-count estimates (against "divergent anchor bias": a rare, lucky action getting an
# overly large advantage), and "Variance-Gated Credit Weighting" suppresses anchors dominated by
# within-action noise; it is critic-free. The method section's equations were not available to us, so
# these are our choices, each an `ECPOOptions` key: the canonical form (lower case, whitespace
# collapsed), the shrinkage form (a pseudo-count k toward the anchor mean, k = 1), the gate (the
# variance ratio B/(B + W + ε), or a sigmoid / threshold of it), the normalisation (GiGPO's), and the
# sum with GiGPO's episode-level advantage (weight ω on the step level).


def canonical_action(text: str) -> str:
    """The action's canonical form: lower-cased, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(text.lower().split())


def _stable_sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def variance_gate(by_action: Sequence[Sequence[float]], o: ECPOOptions, eps: float) -> float:
    """An anchor's weight from the step returns grouped by action. With N returns and anchor mean μ,
    B = Σ_a n_a (mean_a − μ)² / N and W = Σ_a Σ_i (x_ai − mean_a)² / N (B + W is the anchor's variance);
    ρ = B / (B + W + ε), then w = ρ, σ((ρ − θ)/τ), 1[ρ ≥ θ] or 1 (`ECPOOptions.gate`)."""
    if o.gate == "off":
        return 1.0
    xs = [x for v in by_action for x in v]
    mu, n = _mean(xs), len(xs)
    between = sum(len(v) * (_mean(v) - mu) ** 2 for v in by_action) / n
    within = sum((x - _mean(v)) ** 2 for v in by_action for x in v) / n
    rho = between / (between + within + eps)
    if o.gate == "ratio":
        return rho
    if o.gate == "threshold":
        return 1.0 if rho >= o.gate_threshold else 0.0
    return _stable_sigmoid((rho - o.gate_threshold) / o.gate_temperature)


def anchor_credit(xs: Sequence[float], actions: Sequence[str], o: ECPOOptions, eps: float) -> list[float]:
    """Step-level ECPO advantage of each occurrence at one anchor (returns `xs`, canonical `actions`):
    the calibrated action value Q̃_a = (n_a·mean_a + k·μ)/(n_a + k), so Q̃_a − μ = n_a/(n_a + k)·(mean_a − μ);
    A = w·(Q̃_a − μ)/F with w the anchor's `variance_gate` and F = std(xs) + ε (`mean_std_norm`) or 1.
    Fewer than two occurrences give 0."""
    if len(xs) < 2:
        return [0.0] * len(xs)
    by_action: dict[str, list[float]] = {}
    for x, a in zip(xs, actions, strict=True):
        by_action.setdefault(a, []).append(x)
    mu = _mean(xs)
    w = variance_gate(list(by_action.values()), o, eps)
    f = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) + eps if o.norm == "mean_std_norm" else 1.0
    credit = {a: w * len(v) / (len(v) + o.k) * (_mean(v) - mu) / f for a, v in by_action.items()}
    return [credit[a] for a in actions]


def _ecpo_steps(g: Group, cfg: AdvantageConfig) -> list[list[float]]:
    """ECPO's step-level advantages of one task group, per rollout and step."""
    o = cfg.ecpo
    returns = [discounted_returns(step_rewards(t, cfg), o.gamma) for t in g.flat]
    steps = [s for t in g.flat for s in t.steps]
    keys = anchor_groups([s.anchor for s in steps], o.anchors, o.similarity)
    xs, acts = _flatten(returns), [canonical_action(s.action) for s in steps]
    members: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    out = [0.0] * len(xs)
    for idx in members.values():
        for i, a in zip(idx, anchor_credit([xs[i] for i in idx], [acts[i] for i in idx], o, cfg.eps), strict=True):
            out[i] = a
    return _unflatten(out, returns)


def ecpo(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """ECPO (arXiv:2606.05885): A_t = A^E(τ) + ω·A^C_t. A^E is GiGPO's episode-level advantage (left out
    when `ecpo.episode` is False); A^C_t = w_s·n_a/(n_a + k)·(mean_a − μ_s)/F is the evidence-calibrated,
    variance-gated credit of step t's canonical action a at its anchor s (see `anchor_credit`), over the
    γ-discounted step returns of the task group's steps at that anchor."""
    o = cfg.ecpo
    if o.k < 0:
        raise ValueError(f"ecpo.k must be >= 0 (a pseudo-count), got {o.k}")
    out = []
    for g in groups:
        episode = (_episode_advantages(g, cfg, o.episode_stats, o.norm == "mean_std_norm") if o.episode
                   else [0.0] * len(g.flat))
        out.append([[a_e + o.omega * a_c for a_c in row] for a_e, row in zip(episode, _ecpo_steps(g, cfg),
                                                                             strict=True)])
    return Advantages(steps=out)


# -- StraTA ----------------------------------------------------------------------------------------


def strategy_reward(returns: Sequence[float], o: StraTAOptions) -> float:
    """Top-δ: the mean of the ⌈δ·M⌉ largest returns (at least one); `mix`: δ·mean + (1−δ)·max.
    No rollouts: 0."""
    if not returns:
        return 0.0
    if o.strategy_reward == "mix":
        return o.delta * sum(returns) / len(returns) + (1 - o.delta) * max(returns)
    k = max(1, math.ceil(o.delta * len(returns)))
    return sum(sorted(returns, reverse=True)[:k]) / k


def action_advantages(trajs: list[Trajectory], cfg: AdvantageConfig) -> list[list[float]]:
    """The M rollouts of one strategy. `reward`: x_jt = R_j − κ·judged_jt normalised with the mean/std of
    all rows x (or of the R_j, `stats_over="trajectories"`); `advantage`: GRPO_j(R_j) − κ·judged_jt."""
    o = cfg.strata
    r = [trajectory_return(t, cfg) for t in trajs]
    flags = [[o.kappa * float(s.judged) for s in t.steps] for t in trajs]
    if o.judge_penalty_into == "advantage":
        return [[a - f for f in fl] for a, fl in zip(normalize(r, cfg.eps), flags, strict=True)]
    x = [[rj - f for f in fl] for rj, fl in zip(r, flags, strict=True)]
    pool = _flatten(x) if o.stats_over == "steps" else r
    return _unflatten(normalize_with(_flatten(x), pool, cfg.eps), x)


def strata(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """Strategy advantage: the strategy rewards (top-δ or mix of each strategy's M returns)
    GRPO-normalised across the task's N strategies (N = 1 gives 0). Action advantage: within the M
    rollouts of each strategy, with the self-judgment penalty κ (see `action_advantages`)."""
    steps, strategies = [], []
    for g in groups:
        rewards = [strategy_reward([trajectory_return(t, cfg) for t in ts], cfg.strata) for ts in g.trajectories]
        strategies.append(normalize(rewards, cfg.eps) if g.strategies else [])
        steps.append([row for ts in g.trajectories for row in action_advantages(ts, cfg)])
    return Advantages(steps=steps, strategies=strategies)


# -- value-based estimators ------------------------------------------------------------------------


def gae_advantages(rewards: Sequence[float], values: Sequence[float], last_value: float, gamma: float,
                   lam: float) -> list[float]:
    """δ_t = r_t + γV_{t+1} − V_t (V after the last position = `last_value`); A_t = δ_t + γλA_{t+1}."""
    adv, acc = [0.0] * len(rewards), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        nxt = values[i + 1] if i + 1 < len(values) else last_value
        acc = rewards[i] + gamma * nxt - values[i] + gamma * lam * acc
        adv[i] = acc
    return adv


def _last_value(t: Trajectory, vals: Sequence[float], o: GAEOptions) -> float:
    """0 after a terminated episode; the last value (a bootstrap) after a cut-off one, when enabled."""
    terminated = t.termination in TERMINAL or bool(t.steps and t.steps[-1].done)
    return vals[-1] if vals and o.bootstrap_truncated and not terminated else 0.0


def _check_values(name: str, groups: list[Group], values: Any, per_token: bool) -> None:
    if values is None:
        raise ValueError(f"estimator '{name}' needs critic values: values[g][k][t]"
                         + ("[token]" if per_token else "") + " (compute them with the critic)")
    ok = len(values) == len(groups) and all(
        len(gv) == len(g.flat) and all(len(tv) == len(t.steps) for t, tv in zip(g.flat, gv, strict=True))
        for g, gv in zip(groups, values, strict=True))
    if not ok:
        raise ValueError(f"estimator '{name}': values must have one entry per group, rollout "
                         "(Group.flat order) and step")


def step_gae(groups: list[Group], cfg: AdvantageConfig, values: list[list[list[float]]] | None = None
             ) -> Advantages:
    """StepPO: the step is the action. `values[g][k][t]` = V at step t's last prompt token.
    δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}, targets G_t = A_t + V_t (`Advantages.returns`,
    computed before whitening); advantages whitened over all steps of the batch (`gae.whiten`)."""
    _check_values("step_gae", groups, values, per_token=False)
    o = cfg.gae
    adv, ret = [], []
    for g, gv in zip(groups, values, strict=True):
        ga = [gae_advantages(step_rewards(t, cfg), v, _last_value(t, v, o), o.gamma, o.lam)
              for t, v in zip(g.flat, gv, strict=True)]
        adv.append(ga)
        ret.append([[a + v for a, v in zip(av, vv, strict=True)] for av, vv in zip(ga, gv, strict=True)])
    if o.whiten:
        adv = _unflatten(normalize(_flatten(adv), cfg.eps), adv)
    return Advantages(steps=adv, returns=ret)


def _token_rewards(t: Trajectory, tv: list[list[float]], cfg: AdvantageConfig) -> list[float]:
    """Step t's reward on its last response token, 0 on the others (flattened over the steps)."""
    return [r if i == len(v) - 1 else 0.0 for r, v in zip(step_rewards(t, cfg), tv, strict=True)
            for i in range(len(v))]


def gae(groups: list[Group], cfg: AdvantageConfig, values: list[list[list[list[float]]]] | None = None
        ) -> Advantages:
    """Classic token-level GAE: the response tokens of all steps form one sequence; step t's reward
    arrives on its last response token; `values[g][k][t][i]` = V before response token i of step t.
    Returns per-token advantages (whitened over all tokens, `gae.whiten`) and targets A + V; `steps` is
    the mean token advantage of each step and `returns` the target at each step's first token."""
    _check_values("gae", groups, values, per_token=True)
    o = cfg.gae
    tok_adv, tok_ret = [], []
    for g, gv in zip(groups, values, strict=True):
        ga, gr = [], []
        for t, tv in zip(g.flat, gv, strict=True):
            flat_v = _flatten(tv)
            a = gae_advantages(_token_rewards(t, tv, cfg), flat_v, _last_value(t, flat_v, o), o.gamma, o.lam)
            ga.append(_unflatten(a, tv))
            gr.append(_unflatten([x + v for x, v in zip(a, flat_v, strict=True)], tv))
        tok_adv.append(ga)
        tok_ret.append(gr)
    if o.whiten:
        tok_adv = _unflatten(normalize(_flatten(tok_adv), cfg.eps), tok_adv)
    steps = [[[sum(s) / len(s) if s else 0.0 for s in a] for a in ga] for ga in tok_adv]
    returns = [[[s[0] if s else 0.0 for s in r] for r in gr] for gr in tok_ret]
    return Advantages(steps=steps, token_advantages=tok_adv, returns=returns, token_returns=tok_ret)


# -- MT-GRPO ---------------------------------------------------------------------------------------


def mt_grpo(groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """A_kt = A^O_k + λ·A^T_kt. A^O: the group-normalised trajectory return. A^T: the turn reward
    (base_t of `step_reward`, before penalties) normalised across the rollouts that reached turn t;
    a turn reached by one rollout, or where all agree, gets A^T = 0, i.e. A^O alone."""
    out = []
    for g in groups:
        a_o = normalize(_returns(g, cfg), cfg.eps)
        bases = [step_bases(t, cfg) for t in g.flat]
        a_t = [[0.0] * len(b) for b in bases]
        for turn in range(max(map(len, bases), default=0)):
            idx = [k for k, b in enumerate(bases) if len(b) > turn]
            for k, a in zip(idx, normalize([bases[k][turn] for k in idx], cfg.eps), strict=True):
                a_t[k][turn] = a
        out.append([[ao + cfg.mt_grpo.lam * x for x in row] for ao, row in zip(a_o, a_t, strict=True)])
    return Advantages(steps=out)


# -- registry --------------------------------------------------------------------------------------

Estimator = Callable[..., Advantages]

ESTIMATORS: dict[str, Estimator] = {
    "grpo": grpo, "drgrpo": drgrpo, "rloo": rloo, "reinforce_pp": reinforce_pp, "gigpo": gigpo, "ecpo": ecpo,
    "strata": strata, "step_gae": step_gae, "gae": gae, "mt_grpo": mt_grpo,
}
NEEDS_VALUES: dict[str, str] = {"step_gae": "step", "gae": "token"}
"""Estimators that need critic values, and at which granularity."""


def compute_advantages(name: str, groups: list[Group], cfg: AdvantageConfig, values: Any = None) -> Advantages:
    """Look the estimator up by name (an unknown name is an error naming the closest) and run it; then
    `cap_invalid` when `invalid_steps` says so."""
    adv = lookup("advantage estimator", name, ESTIMATORS)(groups, cfg, values)
    return cap_invalid(groups, adv) if cfg.invalid_steps == "nonpositive" else adv


def cap_invalid(groups: list[Group], adv: Advantages) -> Advantages:
    """A copy of `adv` with A ← min(A, 0) on every invalid step (its tokens too, for token estimators).
    A won episode often holds a few refused actions; the trajectory-level estimators would push them up
    with the rest, and a small policy learns to repeat them."""
    def cap(a: Any, valid: bool) -> Any:
        return a if valid else ([min(x, 0.0) for x in a] if isinstance(a, list) else min(a, 0.0))

    def per_step(nested: list[list[list[Any]]]) -> list[list[list[Any]]]:
        return [[[cap(a, s.valid) for a, s in zip(ta, t.steps, strict=True)] for ta, t in zip(ga, g.flat, strict=True)]
                for ga, g in zip(nested, groups, strict=True)]

    tokens = per_step(adv.token_advantages) if adv.token_advantages is not None else None
    return dataclasses.replace(adv, steps=per_step(adv.steps), token_advantages=tokens)


def with_step_penalties(groups: list[Group], extra: list[list[list[float]]]) -> list[Group]:
    """Copies of `groups` with `extra[g][k][t]` added to each step's penalty (e.g. β·KL of the step,
    for KL in the reward); the originals are untouched."""
    out = []
    for g, ge in zip(groups, extra, strict=True):
        it = iter(ge)
        trajs = [[dataclasses.replace(t, steps=[dataclasses.replace(s, penalty=s.penalty + e)
                                                for s, e in zip(t.steps, next(it), strict=True)])
                  for t in ts] for ts in g.trajectories]
        out.append(dataclasses.replace(g, trajectories=trajs))
    return out


def assign(groups: list[Group], adv: Advantages) -> None:
    """Write advantages onto the records (for logs and the viewer); estimators themselves are pure."""
    for g, group in enumerate(groups):
        for k, traj in enumerate(group.flat):
            for t, step in enumerate(traj.steps):
                step.advantage = adv.steps[g][k][t]
        if adv.strategies and adv.strategies[g]:
            for i, ts in enumerate(group.trajectories):
                for traj in ts:
                    traj.strategy_advantage = adv.strategies[g][i]
