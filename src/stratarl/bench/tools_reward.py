"""`stratarl bench tools-reward`: ASTRA's F1 trajectory reward vs its recall side alone vs its precision
side alone, as the RL reward on the synthesized `tools:` dataset (seed 001 reports that recall-only
makes the policy call tools without limit and precision-only makes it call too few).

One warm-up SFT checkpoint on gold `tools:seed` trajectories (`configs/bench_tools_reward.yaml`) is
shared by every variant; each variant then runs `iterations` RL iterations with `reward=<variant>` set
in the env id, and the held-out split is evaluated greedily. Measured per iteration (training rollouts)
and on the held-out items:

    calls per episode   steps that reached the env with an action that is not an answer (the env's
                        own call count `c`: `envs/tools.py` reads `answer: X` as the answer)
    F1                  ASTRA's F1 of the episode; held-out episodes always run with `reward=f1`, so
                        held-out F1 is comparable across variants whatever the training reward was.
                        During training the logged F1 is recomputed from the same (n̂, n, c)
    success             the final answer matches the gold answer (the env's `won`)

How it departs from the paper: the paper trains a 32B model with many more iterations; here a tiny
model and a few iterations show only the direction of each reward's pull on the call count.
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
from ..errors import UnknownNameError, UserError
from ..stats import mean_interval
from .common import in_fresh_process, save_results

VARIANTS = ("f1", "recall", "precision")
"""Training rewards compared (the `reward=` parameter of `tools:` envs)."""


@dataclass
class ToolsRewardBenchConfig:
    """`stratarl bench tools-reward`."""

    config: str = "configs/bench_tools_reward.yaml"
    """Base TrainConfig YAML (a `tools:` env, group shape, sampling, optimizer, warm-up SFT)."""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """Training rewards to compare: f1, recall, precision."""
    seeds: int = 1
    """RL seeds per variant (0 .. seeds-1)."""
    iterations: int = 6
    """RL iterations per run."""
    eval_episodes: int = 26
    """Held-out episodes per evaluation (the test split of `tools:seed` has 26 items)."""
    sft_checkpoint: str = ""
    """Start from this checkpoint instead of running the warm-up SFT of the base config."""
    out_dir: str = "runs/bench_tools_reward"
    """Where the SFT checkpoint, per-run metrics and results.json go."""
    overrides: list[str] = field(default_factory=list)
    """Extra dotted overrides applied to the base config of every variant."""


@dataclass(frozen=True)
class EpisodeStats:
    """What the bench reads off one episode."""

    calls: int
    """Tool calls (env steps whose action is not an answer)."""
    f1: float
    """ASTRA F1 of the episode."""
    won: bool
    """Final answer matched the gold one."""


@dataclass
class Point:
    """Means over a set of episodes."""

    episodes: int
    """How many episodes."""
    calls: float
    """Mean tool calls per episode."""
    f1: float
    """Mean F1."""
    success: float
    """Share of episodes won."""


@dataclass
class RewardRun:
    """One training reward at one seed."""

    variant: str
    """Training reward: f1, recall or precision."""
    seed: int
    """RL seed."""
    curve: list[Point] = field(default_factory=list)
    """Training-rollout means after each iteration."""
    heldout: Point | None = None
    """Greedy held-out evaluation after the last iteration (F1-scored)."""
    heldout_f1_per_episode: list[float] = field(default_factory=list)
    """Held-out F1 of each episode (for the interval)."""
    seconds: float = 0.0
    """Wall time of the run."""


# --- pure aggregation --------------------------------------------------------------------------------

def episode_stats(traj: Any) -> EpisodeStats:
    """Calls, reward and won of a finished `tools:` trajectory. A call is a step that reached the env
    (the runner leaves the env's score in its info) with an action the env does not read as an answer.
    The reward is the env's score after its last env step: the env's running reward, also when the
    runner ended the episode on a step it rejected itself (then `traj.outcome` is 0)."""
    from ..envs.tools import read_call

    scored = [s for s in traj.steps if "score" in s.info]
    calls = sum(1 for s in scored if read_call(s.action).kind != "answer")
    return EpisodeStats(calls=calls, f1=float(scored[-1].info["score"]) if scored else 0.0, won=bool(traj.won))


def f1_of(reward: str, value: float, n: int, calls: int) -> float:
    """ASTRA's F1 from the episode's reward under `reward`, its sub-question count n and its calls c:
    recall r = n̂/n gives n̂ = r·n; precision p = n̂/(c + ε) gives n̂ = p·(c + ε); then f1_reward(n̂, n, c)."""
    from ..envs.tools import EPS, f1_reward

    if reward == "f1":
        return value
    solved = round(value * n) if reward == "recall" else round(value * (calls + EPS))
    return f1_reward(solved, n, calls)


def point(stats: list[EpisodeStats]) -> Point:
    """Means over episodes (zeros for none)."""
    k = len(stats)
    if not k:
        return Point(0, 0.0, 0.0, 0.0)
    return Point(k, sum(s.calls for s in stats) / k, sum(s.f1 for s in stats) / k, sum(s.won for s in stats) / k)


def variant_summary(runs: list[RewardRun]) -> dict[str, Any]:
    """Per training reward: held-out calls/F1/success averaged over seeds (an interval on F1 over all
    held-out episodes), and the training curve averaged over seeds per iteration."""
    held = [r.heldout for r in runs if r.heldout is not None]
    f1s = [x for r in runs for x in r.heldout_f1_per_episode]
    ci = mean_interval(f1s) if len(f1s) > 1 else None
    n = min((len(r.curve) for r in runs), default=0)
    curve = [dataclasses.asdict(_mean_points([r.curve[i] for r in runs])) for i in range(n)]
    out = dataclasses.asdict(_mean_points(held)) if held else {}
    return {"seeds": len(runs), "heldout": out,
            "heldout_f1_ci95": [round(ci.low, 4), round(ci.high, 4)] if ci else [],
            "train_curve": curve,
            "train_calls_first_last": [curve[0]["calls"], curve[-1]["calls"]] if curve else [],
            "seconds": round(sum(r.seconds for r in runs), 1)}


def _mean_points(ps: list[Point]) -> Point:
    k = len(ps)
    if not k:
        return Point(0, 0.0, 0.0, 0.0)
    return Point(sum(p.episodes for p in ps), round(sum(p.calls for p in ps) / k, 4),
                 round(sum(p.f1 for p in ps) / k, 4), round(sum(p.success for p in ps) / k, 4))


def summarize(cfg: ToolsRewardBenchConfig, start: Path, sft: Point | None, runs: list[RewardRun]) -> dict:
    variants = {v: variant_summary([r for r in runs if r.variant == v]) for v in dict.fromkeys(r.variant for r in runs)}
    return {"config": dataclasses.asdict(cfg), "sft_checkpoint": str(start),
            "sft_heldout": dataclasses.asdict(sft) if sft else {}, "variants": variants,
            "runs": [dataclasses.asdict(r) for r in runs]}


# --- running ----------------------------------------------------------------------------------------

def check_variants(names: list[str]) -> None:
    for n in names:
        if n not in VARIANTS:
            raise UnknownNameError("reward variant", n, list(VARIANTS))


def with_reward(env_id: str, reward: str) -> str:
    """The env id with its `reward=` parameter set (added when absent)."""
    base, _, query = env_id.partition("?")
    if not base.startswith("tools:"):
        raise UserError(f"bench tools-reward needs a tools: environment, got '{env_id}' (e.g. tools:seed)")
    kept = [kv for kv in query.split("&") if kv and not kv.startswith("reward=")]
    return f"{base}?{'&'.join([f'reward={reward}', *kept])}"


def train_config(cfg: ToolsRewardBenchConfig, reward: str, name: str, seed: int = 0) -> Any:
    from ..train.config import TrainConfig

    quiet = ["logging.tensorboard=false", "logging.trajectories=false", "logging.progress=false",
             "eval.every=0", "eval.final_episodes=0"]
    tcfg = load_config(TrainConfig, cfg.config, [*cfg.overrides, *quiet, f"name={name}", f"out_dir={cfg.out_dir}",
                                                 f"seed={seed}", f"iterations={cfg.iterations}"])
    return dataclasses.replace(tcfg, env=dataclasses.replace(tcfg.env, id=with_reward(tcfg.env.id, reward)))


def sft_checkpoint(cfg: ToolsRewardBenchConfig, console: Any) -> Path:
    """The shared starting point: the given checkpoint, or the base config's warm-up SFT (cached)."""
    if cfg.sft_checkpoint:
        return Path(cfg.sft_checkpoint)
    from ..train.pipeline import warmup_sft

    tcfg = train_config(cfg, "f1", "sft")
    return warmup_sft(dataclasses.replace(tcfg, warmup=dataclasses.replace(tcfg.warmup, enabled=True)), console)


def _stats(groups: list, reward: str) -> list[EpisodeStats]:
    from ..envs.tools import load_items

    out = []
    for t in (t for g in groups for t in g.flat):
        st = episode_stats(t)
        dataset = t.task.env.partition(":")[2]
        n = len(load_items(dataset, t.task.split)[t.task.seed].subquestions)
        out.append(dataclasses.replace(st, f1=f1_of(reward, st.f1, n, st.calls)))
    return out


def rl_iteration(state: Any, reward: str) -> Point:
    """One iteration of the RL driver's stages (`train/rl.py`), keeping the groups to count calls."""
    from ..train import rl

    log = rl.IterationLog()
    groups = rl.rollout(state, rl.sample_tasks(state), log)
    rl.judge(state, groups, log)
    adv = rl.advantages(state, groups, log)
    rows = rl.samples(state, groups, adv, log)
    rl.old_and_ref_logprobs(state, rows, log)
    rl.update(state, rows, log)
    rl.sync_weights(state)
    p = point(_stats(groups, reward))
    state.logger.log(state.iteration, {**log.metrics, "bench/calls": p.calls, "bench/f1": p.f1})
    state.iteration += 1
    return p


def heldout(state: Any, episodes: int) -> tuple[Point, list[float]]:
    """Greedy held-out episodes of the F1-scored env, whatever the training reward."""
    from ..envs.registry import make_tasks
    from ..rollout.evaluate import evaluate_groups
    from ..train.rl import _runner_cfg

    e = state.cfg.eval
    tasks = make_tasks(with_reward(state.cfg.env.id, "f1"), e.split, n=episodes)
    rcfg = _runner_cfg(state)
    rcfg = dataclasses.replace(rcfg, sampling=dataclasses.replace(rcfg.sampling, temperature=e.temperature))
    groups = evaluate_groups(state.engine, state.tokenizer, state.pool, tasks, rcfg, False, seed=state.cfg.seed + 7)
    stats = _stats(groups, "f1")
    return point(stats), [s.f1 for s in stats]


def run_variant(cfg: ToolsRewardBenchConfig, reward: str, seed: int, start: Path) -> RewardRun:
    """RL from `start` with the given training reward, then the held-out evaluation ("sft": none)."""
    from ..train.state import build_state, close

    tcfg = train_config(cfg, "f1" if reward == "sft" else reward, f"{reward}-s{seed}", seed)
    state = build_state(tcfg, start)
    run, t0 = RewardRun(reward, seed), time.perf_counter()
    try:
        while reward != "sft" and state.iteration < cfg.iterations:
            run.curve.append(rl_iteration(state, reward))
        run.heldout, run.heldout_f1_per_episode = heldout(state, cfg.eval_episodes)
    finally:
        close(state)
    run.seconds = time.perf_counter() - t0
    return run


def run_tools_reward_bench(cfg: ToolsRewardBenchConfig, console: Any = None,
                           on_run: Callable[[str, int], None] | None = None) -> dict:
    check_variants(cfg.variants)
    # in a process of its own: the SFT model would stay in this one (~10 GB with SmolLM2) beside each RL run
    start = in_fresh_process(sft_checkpoint, cfg, None)
    if console:
        console.print(f"warm-up SFT checkpoint: {start}")
    if on_run:
        on_run("sft", 0)
    sft = in_fresh_process(run_variant, cfg, "sft", 0, start).heldout
    runs: list[RewardRun] = []
    for variant in cfg.variants:
        for seed in range(cfg.seeds):
            if on_run:
                on_run(variant, seed)
            runs.append(in_fresh_process(run_variant, cfg, variant, seed, start))
            save_results(cfg.out_dir, summarize(cfg, start, sft, runs))
    return summarize(cfg, start, sft, runs)


def print_results(results: dict, as_json: bool, console: Any) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    table = Table(title="training reward vs tool calls and held-out F1 (one SFT checkpoint, greedy held-out)")
    for col in ("training reward", "seeds", "train calls/ep (first -> last it.)", "held-out calls/ep",
                "held-out F1 [95% CI]", "held-out success"):
        table.add_column(col)
    sft = results.get("sft_heldout") or {}
    if sft:
        table.add_row("(SFT only)", "-", "-", f"{sft['calls']:.2f}", f"{sft['f1']:.3f}", f"{100 * sft['success']:.1f}%")
    for v, r in results["variants"].items():
        h, ci, tc = r["heldout"], r["heldout_f1_ci95"], r["train_calls_first_last"]
        table.add_row(v, str(r["seeds"]), f"{tc[0]:.2f} -> {tc[1]:.2f}" if tc else "-", f"{h['calls']:.2f}",
                      f"{h['f1']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
                      f"{100 * h['success']:.1f}%")
    console.print(table)
