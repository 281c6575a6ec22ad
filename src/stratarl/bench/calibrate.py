"""`stratarl bench calibrate`: SFT-only vs IPR vs STeCa from one warm-up checkpoint, at the same number of
optimizer steps (`optim.steps` of the base config, `configs/bench_calibrate.yaml`).

    sft    continue SFT on the expert trajectories (token-mean NLL)
    ipr    step + trajectory preference pairs, DPO + NLL (β = 0.1), reference = the starting policy
    steca  calibrated trajectories (template reflections) + D_s + D_e, weighted NLL

Every method runs `calibrate.pipeline.run_calibrate` with `method=<m>`, `seed=<s>` and the shared start.
The expert trajectories and iteration 0's exploration and Monte-Carlo values depend only on the start
checkpoint and `mc_seed`, so they are computed once and linked into every run directory (the pipeline reads
an existing file instead of recomputing it); seeds differ in the training data order. The starting
checkpoint itself is evaluated once (row `start`). Reported per method: held-out greedy success per seed,
the mean over seeds with a t-interval, and the pooled Wilson interval over all seeds' episodes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..calibrate.pipeline import METHODS, CalibrateConfig, Run, held_out, run_calibrate, warm_start
from ..config import load_config
from ..errors import UnknownNameError
from ..stats import mean_interval, wilson
from .common import save_results

SHARED = ("experts.jsonl", "it0/scans.jsonl")
"""Files that depend only on the start checkpoint and `mc_seed`: computed by the first run, linked into the rest."""


@dataclass
class CalibrateBenchConfig:
    """`stratarl bench calibrate`."""

    config: str = "configs/bench_calibrate.yaml"
    """Base CalibrateConfig YAML (env, tasks, MC values, optimizer steps, evaluation)."""
    methods: list[str] = field(default_factory=lambda: ["sft", "ipr", "steca"])
    """Methods compared (`sft`, `ipr`, `steca`)."""
    seeds: int = 3
    """Training seeds per method (0 .. seeds-1)."""
    out_dir: str = "runs/bench_calibrate"
    """Where the runs and results.json go."""
    overrides: list[str] = field(default_factory=list)
    """Extra dotted overrides of the base config."""


def check_methods(names: list[str]) -> None:
    for n in names:
        if n not in METHODS:
            raise UnknownNameError("method", n, list(METHODS))


def start_checkpoint(base: CalibrateConfig, console: Any) -> Path:
    """The base config's `warmup_checkpoint` when it exists, else its warm-up SFT (run once, cached)."""
    if base.warmup_checkpoint and Path(base.warmup_checkpoint, "config.json").is_file():
        return Path(base.warmup_checkpoint)
    if base.warmup_checkpoint and console:
        console.print(f"{base.warmup_checkpoint} not found: running the warm-up SFT ({base.warmup.tasks} tasks)")
    cfg = dataclasses.replace(base, warmup_checkpoint="", name="warmup")
    return warm_start(cfg, Path(cfg.out_dir) / cfg.name, console)


def evaluate_start(base: CalibrateConfig, start: Path, console: Any) -> dict[str, Any]:
    from ..engines.hf import HFEngine, HFEngineConfig
    from ..envs.pool import EnvPool
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(start)
    engine = HFEngine(start, HFEngineConfig(), tokenizer)
    try:
        with EnvPool(num_workers=base.workers) as pool:
            return held_out(Run(base, Path(base.out_dir), tokenizer, None, engine, pool, console))
    finally:
        engine.close()


def _link_shared(src: Path | None, dst: Path) -> None:
    for rel in SHARED if src else ():
        if (src / rel).is_file() and not (dst / rel).exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src / rel, dst / rel)
            except OSError:
                shutil.copyfile(src / rel, dst / rel)


def run_calibrate_bench(cfg: CalibrateBenchConfig, console: Any = None,
                        on_run: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    check_methods(cfg.methods)
    base = load_config(CalibrateConfig, cfg.config, [*cfg.overrides, f"out_dir={cfg.out_dir}", "eval.before=false"])
    start = start_checkpoint(base, console)
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "start": str(start),
                               "start_eval": evaluate_start(base, start, console), "runs": []}
    shared: Path | None = None
    for method in cfg.methods:
        for seed in range(cfg.seeds):
            if on_run:
                on_run(method, seed)
            run_cfg = dataclasses.replace(base, name=f"{method}-s{seed}", method=method, seed=seed,
                                          warmup_checkpoint=str(start))
            run_dir = Path(cfg.out_dir) / run_cfg.name
            _link_shared(shared, run_dir)
            rep = run_calibrate(run_cfg, None)
            if method != "sft" and shared is None:
                shared = run_dir
            results["runs"].append({"method": method, "seed": seed, "eval": rep["eval"], "seconds": rep["seconds"],
                                    "reused": rep["reused"], "iterations": rep["iterations"]})
            results["methods"] = summarize(results["runs"])
            save_results(cfg.out_dir, results)
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for m in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == m]
        rates = [r["eval"]["wins"] / max(1, r["eval"]["episodes"]) for r in rs]
        wins, episodes = sum(r["eval"]["wins"] for r in rs), sum(r["eval"]["episodes"] for r in rs)
        pooled, mi = wilson(wins, episodes), mean_interval(rates)
        out[m] = {"seeds": len(rs), "success_per_seed": [round(x, 4) for x in rates],
                  "success_mean": round(mi.value, 4),
                  "success_ci95": [round(max(0.0, mi.low), 4), round(min(1.0, mi.high), 4)],
                  "pooled_wins": wins, "pooled_episodes": episodes,
                  "pooled_ci95": [round(pooled.low, 4), round(pooled.high, 4)],
                  "seconds_per_run": round(sum(r["seconds"] for r in rs) / len(rs), 1)}
    return out


def print_results(results: dict[str, Any], as_json: bool, console: Any) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    table = Table(title=f"held-out greedy success from one start ({results['start']}), same optimizer steps")
    for col in ("method", "seeds", "success per seed", "mean [95% CI over seeds]", "pooled wins/episodes [Wilson 95%]",
                "s/run"):
        table.add_column(col)
    s = results["start_eval"]
    table.add_row("start", "-", f"{100 * s['success']:.1f}%", "-", f"{s['wins']}/{s['episodes']} "
                  f"[{100 * s['success_ci95'][0]:.1f}, {100 * s['success_ci95'][1]:.1f}]", "-")
    for m, r in results.get("methods", {}).items():
        table.add_row(m, str(r["seeds"]), ", ".join(f"{100 * x:.1f}%" for x in r["success_per_seed"]),
                      f"{100 * r['success_mean']:.1f}% [{100 * r['success_ci95'][0]:.1f}, {100 * r['success_ci95'][1]:.1f}]",
                      f"{r['pooled_wins']}/{r['pooled_episodes']} [{100 * r['pooled_ci95'][0]:.1f}, "
                      f"{100 * r['pooled_ci95'][1]:.1f}]", f"{r['seconds_per_run']:g}")
    console.print(table)
