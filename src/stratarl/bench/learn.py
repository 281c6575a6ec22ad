"""`stratarl bench learn`: what each RL method adds over the same SFT checkpoint, at the same budget of
environment steps.

Every variant starts from one warm-up SFT checkpoint (built once, or given) and runs RL iterations of
the base config (`configs/bench_learn.yaml`) with its own overrides until it has taken `env_steps`
environment steps; then the held-out split is evaluated. Variants (`VARIANTS`):

    sft            no RL: the SFT checkpoint evaluated as is (greedy, so one evaluation serves every seed)
    grpo           flat groups of N·M rollouts per task, GRPO advantages
    gigpo          the same groups, GiGPO (episode + anchor-state step advantages)
    strata         N strategies x M rollouts, σ·N candidates with farthest-point selection, rule judge
    strata_sigma1  StraTA without diversity (σ = 1: the first N sampled strategies)
    strata_kappa0  StraTA without self-judgment (no judge, κ = 0)
    ecpo           the flat groups, ECPO (GiGPO's anchors with evidence-calibrated, variance-gated credit)
    strata_experience  StraTA with SLEA-RL step-level experience retrieval (shown from iteration 1 on)
    strata_dpepo   StraTA with DPEPO's step-level diversity rewards (the paper's advantage scaling)

The default run is the first six; the last three are the related methods of issue 10 (`--variants`).

Reported per variant: held-out success (mean over seeds with a t-interval, and the pooled Wilson
interval over all seeds' episodes), training-rollout success vs cumulative env steps (PNG), and the
mean wall time of each driver stage per iteration; `strata_overhead_vs_grpo` is StraTA's seconds per
iteration and per env step divided by GRPO's, both measured in the same run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..config import load_config
from ..errors import UnknownNameError
from ..stats import mean_interval, wilson
from .common import in_fresh_process, save_figure, save_results

VARIANTS: dict[str, list[str]] = {
    "sft": [],
    "grpo": ["algo.estimator=grpo", "rollout.group.strategy=false", "strategy.judge.kind=none"],
    "gigpo": ["algo.estimator=gigpo", "rollout.group.strategy=false", "strategy.judge.kind=none"],
    "strata": ["algo.estimator=strata", "rollout.group.strategy=true", "strategy.judge.kind=rule"],
    "strata_sigma1": ["algo.estimator=strata", "rollout.group.strategy=true", "strategy.judge.kind=rule",
                      "rollout.group.candidates=1"],
    "strata_kappa0": ["algo.estimator=strata", "rollout.group.strategy=true", "strategy.judge.kind=none",
                      "algo.advantage.strata.kappa=0"],
    "ecpo": ["algo.estimator=ecpo", "rollout.group.strategy=false", "strategy.judge.kind=none"],
    "strata_experience": ["algo.estimator=strata", "rollout.group.strategy=true", "strategy.judge.kind=rule",
                          "experience.enabled=true", "experience.warmup=1", "experience.min_size=1"],
    "strata_dpepo": ["algo.estimator=strata", "rollout.group.strategy=true", "strategy.judge.kind=rule",
                     "algo.diversity_rewards.enabled=true"],
}
"""Variant name -> dotted overrides of the base config. Flat variants get N·M rollouts per task, so
every variant rolls out the same number of episodes per iteration."""

STAGES = ("rollout", "judge", "advantages", "samples", "logprobs", "update", "sync")


@dataclass
class LearnBenchConfig:
    """`stratarl bench learn`."""

    config: str = "configs/bench_learn.yaml"
    """Base TrainConfig YAML (env, group shape, sampling, optimizer, warm-up SFT)."""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS)[:6])
    """Which variants to run (default: SFT-only, GRPO, GiGPO, StraTA and its two ablations)."""
    seeds: int = 1
    """RL seeds per variant (0 .. seeds-1)."""
    env_steps: int = 1500
    """Environment steps each RL run may take (it stops at the first iteration reaching it)."""
    max_iterations: int = 100
    """Safety cap on iterations per run."""
    eval_episodes: int = 100
    """Held-out episodes per evaluation."""
    sft_checkpoint: str = ""
    """Start from this checkpoint instead of running the warm-up SFT of the base config."""
    out_dir: str = "runs/bench_learn"
    """Where the SFT checkpoint, per-run metrics, results.json and curves.png go."""
    overrides: list[str] = field(default_factory=list)
    """Extra dotted overrides applied to the base config of every variant."""


@dataclass
class RunResult:
    """One variant at one seed."""

    variant: str
    seed: int
    wins: int
    episodes: int
    env_steps: int = 0
    iterations: int = 0
    seconds: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(cumulative env steps, training-rollout success) after each iteration."""
    stage_seconds: dict[str, list[float]] = field(default_factory=dict)
    """Per stage: seconds of each iteration."""


def check_variants(names: list[str]) -> None:
    for n in names:
        if n not in VARIANTS:
            raise UnknownNameError("variant", n, list(VARIANTS))


def base_config(cfg: LearnBenchConfig, extra: list[str], name: str, seed: int = 0) -> Any:
    from ..train.config import TrainConfig

    quiet = ["logging.tensorboard=false", "logging.trajectories=false", "logging.progress=false",
             "eval.every=0", "eval.final_episodes=0"]
    return load_config(TrainConfig, cfg.config, [*cfg.overrides, *extra, *quiet, f"name={name}",
                                                 f"out_dir={cfg.out_dir}", f"seed={seed}"])


def sft_checkpoint(cfg: LearnBenchConfig, console: Any) -> Path:
    """The shared starting point: the given checkpoint, or the base config's warm-up SFT (cached)."""
    if cfg.sft_checkpoint:
        return Path(cfg.sft_checkpoint)
    from ..train.pipeline import warmup_sft

    tcfg = base_config(cfg, [], "sft")
    return warmup_sft(dataclasses.replace(tcfg, warmup=dataclasses.replace(tcfg.warmup, enabled=True)), console)


def _flat_group(tcfg: Any) -> Any:
    """Flat variants roll out N·M episodes per task: the same episodes per iteration as StraTA."""
    g = tcfg.rollout.group
    if g.strategy:
        return tcfg
    n = g.n_strategies * g.n_rollouts
    return dataclasses.replace(tcfg, rollout=dataclasses.replace(tcfg.rollout, group=dataclasses.replace(g, n_rollouts=n)))


def run_variant(cfg: LearnBenchConfig, variant: str, seed: int, start: Path) -> RunResult:
    """RL from `start` until the env-step budget, then the held-out evaluation."""
    from ..train.rl import IterationLog, evaluate_policy, run_iteration
    from ..train.state import build_state, close

    tcfg = _flat_group(base_config(cfg, VARIANTS[variant], f"{variant}-s{seed}", seed))
    state = build_state(dataclasses.replace(tcfg, iterations=cfg.max_iterations), start)
    res, t0 = RunResult(variant, seed, 0, 0), time.perf_counter()
    try:
        while variant != "sft" and res.env_steps < cfg.env_steps and state.iteration < cfg.max_iterations:
            _record(res, run_iteration(state), state)
        rep = evaluate_policy(state, cfg.eval_episodes, IterationLog(), prefix="eval")
    finally:
        close(state)
    res.wins, res.episodes, res.seconds = int(rep["wins"]), int(rep["episodes"]), time.perf_counter() - t0
    return res


def _record(res: RunResult, m: dict[str, float], state: Any) -> None:
    state.logger.log(state.iteration, m)
    state.iteration += 1
    res.iterations += 1
    res.env_steps += int(m["rollout/env_steps"])
    res.curve.append((res.env_steps, float(m["rollout/success"])))
    for s in (*STAGES, "iteration"):
        res.stage_seconds.setdefault(s, []).append(float(m.get(f"time/{s}", 0.0)))


def run_learn_bench(cfg: LearnBenchConfig, console: Any = None,
                    on_run: Callable[[str, int], None] | None = None) -> dict:
    check_variants(cfg.variants)
    start = sft_checkpoint(cfg, console)
    runs: list[RunResult] = []
    for variant in cfg.variants:
        for seed in range(1 if variant == "sft" else cfg.seeds):
            if on_run:
                on_run(variant, seed)
            runs.append(in_fresh_process(run_variant, cfg, variant, seed, start))
            save_results(cfg.out_dir, summarize(cfg, start, runs))
    out = summarize(cfg, start, runs)
    plot_curves(runs, Path(cfg.out_dir) / "curves.png")
    return out


def summarize(cfg: LearnBenchConfig, start: Path, runs: list[RunResult]) -> dict:
    variants = {}
    for v in dict.fromkeys(r.variant for r in runs):
        rs = [r for r in runs if r.variant == v]
        variants[v] = _variant_summary(rs)
    out: dict[str, Any] = {"config": dataclasses.asdict(cfg), "sft_checkpoint": str(start), "variants": variants,
                           "runs": [dataclasses.asdict(r) for r in runs]}
    if "strata" in variants and "grpo" in variants:
        s, g = variants["strata"], variants["grpo"]
        out["strata_overhead_vs_grpo"] = {
            "per_iteration": _ratio(s["seconds_per_iteration"], g["seconds_per_iteration"]),
            "per_iteration_median": _ratio(s["median_seconds_per_iteration"], g["median_seconds_per_iteration"]),
            "per_env_step": _ratio(s["seconds_per_env_step"], g["seconds_per_env_step"])}
    return out


def _variant_summary(rs: list[RunResult]) -> dict:
    rates = [r.wins / max(1, r.episodes) for r in rs]
    pooled = wilson(sum(r.wins for r in rs), sum(r.episodes for r in rs))
    mi = mean_interval(rates) if len(rs) > 1 else pooled  # one seed (or SFT-only): its Wilson interval
    iters = sum(r.iterations for r in rs)
    stage = {s: round(sum(sum(r.stage_seconds.get(s, [])) for r in rs) / iters, 3) for s in (*STAGES, "iteration")} \
        if iters else {}
    steps = sum(r.env_steps for r in rs)
    return {
        "seeds": len(rs), "success_per_seed": [round(x, 4) for x in rates],
        "success_mean": round(mi.value, 4), "success_ci95": [round(max(0.0, mi.low), 4), round(min(1.0, mi.high), 4)],  # rates live in [0, 1]
        "pooled_wins": sum(r.wins for r in rs), "pooled_episodes": sum(r.episodes for r in rs),
        "pooled_ci95": [round(pooled.low, 4), round(pooled.high, 4)],
        "iterations_per_seed": round(iters / len(rs), 1), "env_steps_per_seed": round(steps / len(rs), 1),
        "stage_seconds_per_iteration": stage, "seconds_per_iteration": stage.get("iteration", 0.0),
        "median_seconds_per_iteration": _median([t for r in rs for t in r.stage_seconds.get("iteration", [])]),
        "seconds_per_env_step": round(sum(sum(r.stage_seconds.get("iteration", [])) for r in rs) / steps, 5)
        if steps else 0.0,
        "wall_seconds": round(sum(r.seconds for r in rs), 1),
    }


def _median(xs: list[float]) -> float:
    """Robust to the odd iteration slowed by something else on the machine (means are not)."""
    import statistics

    return round(statistics.median(xs), 3) if xs else 0.0


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def plot_curves(runs: list[RunResult], path: Path) -> Path | None:
    """Training-rollout success vs cumulative env steps, mean over seeds per iteration index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for v in dict.fromkeys(r.variant for r in runs if r.curve):
        curves = [r.curve for r in runs if r.variant == v]
        n = min(len(c) for c in curves)
        xs = [sum(c[i][0] for c in curves) / len(curves) for i in range(n)]
        ys = [sum(c[i][1] for c in curves) / len(curves) for i in range(n)]
        ax.plot(xs, ys, marker="o", label=v)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training-rollout success (mean over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def print_results(results: dict, as_json: bool, console: Any) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    table = Table(title="held-out success after the same env-step budget (from one SFT checkpoint)")
    for col in ("variant", "seeds", "success mean [95% CI over seeds]", "pooled wins/episodes [Wilson 95%]",
                "iters/seed", "env steps/seed", "s/iteration (mean, median)"):
        table.add_column(col)
    for v, r in results["variants"].items():
        table.add_row(v, str(r["seeds"]), f"{100 * r['success_mean']:.1f}% [{100 * r['success_ci95'][0]:.1f}, "
                      f"{100 * r['success_ci95'][1]:.1f}]",
                      f"{r['pooled_wins']}/{r['pooled_episodes']} [{100 * r['pooled_ci95'][0]:.1f}, "
                      f"{100 * r['pooled_ci95'][1]:.1f}]", f"{r['iterations_per_seed']:g}",
                      f"{r['env_steps_per_seed']:g}",
                      f"{r['seconds_per_iteration']:.1f}, {r['median_seconds_per_iteration']:.1f}")
    console.print(table)
    if "strata_overhead_vs_grpo" in results:
        o = results["strata_overhead_vs_grpo"]
        console.print(f"StraTA / GRPO wall time: {o['per_iteration']:.2f}x per iteration "
                      f"({o['per_iteration_median']:.2f}x of the medians), {o['per_env_step']:.2f}x per env step")
