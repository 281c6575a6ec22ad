"""`stratarl bench sanity`: does each estimator make the policy better on a task easy enough to see it?

Rung 1 of the learning ladder (docs/sanity.md). One warm-up checkpoint is built from the config's
`warmup.sft` — by default uniformly random admissible actions, which teach the reply format and the
action words but not which action helps, so RL starts near chance. From it, every estimator runs RL
iterations until its training-rollout success, averaged over the last `window` iterations, reaches
`target` or has risen by `gain` over the first iteration's (the untrained rollout), or the iteration
budget runs out. Reported per estimator: start, end, iterations, env_steps, seconds, passed.
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
from .common import in_fresh_process, save_figure, save_results

_STRATA = ["algo.estimator=strata", "rollout.group.strategy=true", "strategy.judge.kind=rule"]
ESTIMATORS: dict[str, list[str]] = {
    "grpo": ["algo.estimator=grpo"],
    "drgrpo": ["algo.estimator=drgrpo"],
    "rloo": ["algo.estimator=rloo"],
    "reinforce_pp": ["algo.estimator=reinforce_pp"],
    "gigpo": ["algo.estimator=gigpo"],
    "ecpo": ["algo.estimator=ecpo"],
    # κ subtracted from the normalised advantage: inside the normalised reward, all-failure groups make
    # κ a full-scale advantage and the policy first learns only to stay admissible (docs/sanity.md)
    "strata": [*_STRATA, "algo.advantage.strata.judge_penalty_into=advantage"],
    "mt_grpo": ["algo.estimator=mt_grpo"],
    # step_gae unwhitened: in a batch where every episode failed, whitened step advantages are the critic's
    # noise at unit scale, and step_gae with them walked into unparseable replies (docs/sanity.md)
    "step_gae": ["algo.estimator=step_gae", "critic.kind=head", "algo.advantage.gae.whiten=false"],
    "gae": ["algo.estimator=gae", "critic.kind=head"],
    "strata_reward_norm": _STRATA,
    "step_gae_whiten": ["algo.estimator=step_gae", "critic.kind=head"],
}
"""Estimator name -> dotted overrides of the rung's config (`gae` is token-level PPO with a critic;
`strata_reward_norm` and `step_gae_whiten`, not run by default, are the settings measured to fail)."""
DEFAULT = [n for n in ESTIMATORS if n not in ("strata_reward_norm", "step_gae_whiten")]


@dataclass
class SanityBenchConfig:
    """`stratarl bench sanity`."""

    config: str = "configs/sanity.yaml"
    """The rung's TrainConfig YAML (env, group shape, optimizer, warm-up SFT)."""
    estimators: list[str] = field(default_factory=lambda: list(DEFAULT))
    """Which estimators to run."""
    max_iterations: int = 30
    """Iteration budget of each estimator."""
    target: float = 0.9
    """Pass when the windowed success reaches this ..."""
    gain: float = 0.5
    """... or has risen this much over the first iteration's."""
    window: int = 3
    """Iterations averaged for the end success."""
    out_dir: str = "runs/bench_sanity"
    """Where the warm-up checkpoint, results.json and curves.png go."""
    resume: bool = False
    """Keep the estimators already in `<out_dir>/results.json`."""
    overrides: list[str] = field(default_factory=list)
    """Extra dotted overrides of the rung's config."""


@dataclass
class SanityResult:
    """What one estimator did on the rung."""

    estimator: str
    """Name in `ESTIMATORS`."""
    start: float = 0.0
    """Training-rollout success of the first iteration (the warm-up policy's rollouts)."""
    end: float = 0.0
    """Mean training-rollout success over the last `window` iterations."""
    iterations: int = 0
    """RL iterations run (until the criterion held or the budget was spent)."""
    env_steps: int = 0
    """Env steps of those iterations' rollouts."""
    seconds: float = 0.0
    """Wall time of the RL iterations (the warm-up not included)."""
    passed: bool = False
    """Whether the criterion held."""
    stalled: bool = False
    """Stopped early: `STALL` iterations in a row without success or gradient (every reward equal, so the
    policy no longer changes; the collapse into unparseable replies ends here)."""
    curve: list[float] = field(default_factory=list)
    """Training-rollout success of each iteration."""


def check_estimators(names: list[str]) -> None:
    for n in names:
        if n not in ESTIMATORS:
            raise UnknownNameError("estimator", n, list(ESTIMATORS))


def rung_config(cfg: SanityBenchConfig, extra: list[str], name: str) -> Any:
    from ..train.config import TrainConfig

    quiet = ["logging.tensorboard=false", "logging.trajectories=false", "logging.progress=false",
             "eval.every=0", "eval.final_episodes=0"]
    return load_config(TrainConfig, cfg.config, [*cfg.overrides, *extra, *quiet, f"name={name}",
                                                 f"out_dir={cfg.out_dir}", f"iterations={cfg.max_iterations}"])


def warm_checkpoint(cfg: SanityBenchConfig, console: Any = None) -> Path:
    """The rung's warm-up SFT checkpoint (cached by the pipeline under the config's key)."""
    from ..train.pipeline import warmup_sft

    tcfg = rung_config(cfg, [], "warmup")
    return warmup_sft(dataclasses.replace(tcfg, warmup=dataclasses.replace(tcfg.warmup, enabled=True)), console)


def passed(curve: list[float], cfg: SanityBenchConfig) -> bool:
    if len(curve) < cfg.window:
        return False
    end = sum(curve[-cfg.window:]) / cfg.window
    return end >= cfg.target or end - curve[0] >= cfg.gain


STALL = 2
"""Iterations in a row with no success and a zero gradient after which a run stops (`SanityResult.stalled`)."""


def run_estimator(cfg: SanityBenchConfig, name: str, start: Path,
                  on_iteration: Callable[[int, float], None] | None = None) -> SanityResult:
    """RL from `start` until the criterion holds or the budget is spent."""
    from ..train.rl import run_iteration
    from ..train.state import build_state, close

    state = build_state(rung_config(cfg, ESTIMATORS[name], f"sanity-{name}"), start)
    res, t0, still = SanityResult(name), time.perf_counter(), 0
    try:
        while res.iterations < cfg.max_iterations and not passed(res.curve, cfg) and still < STALL:
            m = run_iteration(state)
            still = still + 1 if m["rollout/success"] == 0 and m.get("train/grad_norm", 1.0) == 0 else 0
            state.logger.log(state.iteration, m)
            state.iteration += 1
            res.iterations += 1
            res.env_steps += int(m["rollout/env_steps"])
            res.curve.append(round(float(m["rollout/success"]), 4))
            if on_iteration:
                on_iteration(res.iterations, res.curve[-1])
    finally:
        close(state)
    res.seconds = round(time.perf_counter() - t0, 1)
    res.start = res.curve[0] if res.curve else 0.0
    tail = res.curve[-cfg.window:]
    res.end = round(sum(tail) / len(tail), 4) if tail else 0.0
    res.passed = passed(res.curve, cfg)
    res.stalled = still >= STALL
    return res


def run_sanity_bench(cfg: SanityBenchConfig, console: Any = None,
                     on_run: Callable[[str, int], None] | None = None) -> dict:
    check_estimators(cfg.estimators)
    start = warm_checkpoint(cfg, console)
    done = _previous(cfg) if cfg.resume else {}
    for name in cfg.estimators:
        if on_run:
            on_run(name, 0)
        if name not in done:
            done[name] = dataclasses.asdict(in_fresh_process(run_estimator, cfg, name, start))
            save_results(cfg.out_dir, summarize(cfg, start, done))
    out = summarize(cfg, start, done)
    plot_curves(done, Path(cfg.out_dir) / "curves.png")
    return out


def _previous(cfg: SanityBenchConfig) -> dict[str, dict]:
    path = Path(cfg.out_dir) / "results.json"
    return orjson.loads(path.read_bytes())["estimators"] if path.is_file() else {}


def summarize(cfg: SanityBenchConfig, start: Path, done: dict[str, dict]) -> dict:
    rung = rung_config(cfg, [], "warmup")
    return {"config": dataclasses.asdict(cfg), "env": rung.env.id, "warmup_checkpoint": str(start),
            "criterion": f"mean success of the last {cfg.window} iterations >= {cfg.target} or "
                         f">= start + {cfg.gain}, within {cfg.max_iterations} iterations",
            "estimators": done, "all_passed": all(r["passed"] for r in done.values())}


def plot_curves(done: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in done.items():
        ax.plot(range(1, len(r["curve"]) + 1), r["curve"], marker=".", label=name)
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("training-rollout success")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def print_results(results: dict, as_json: bool, console: Any) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    table = Table(title=f"learning sanity on {results['env']}: {results['criterion']}")
    for col in ("estimator", "start", "end", "iterations", "env steps", "seconds", "passed"):
        table.add_column(col)
    for name, r in results["estimators"].items():
        table.add_row(name, f"{100 * r['start']:.0f}%", f"{100 * r['end']:.0f}%", str(r["iterations"]),
                      str(r["env_steps"]), f"{r['seconds']:.0f}", "yes" if r["passed"] else "NO")
    console.print(table)
