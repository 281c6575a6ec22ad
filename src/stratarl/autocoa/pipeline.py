"""`stratarl autocoa CONFIG`: the configured stages in order, a checkpoint after each, held-out evaluation.

    runs/<name>/config.yaml         the resolved config
    runs/<name>/<stage>/            HF model + tokenizer after that stage, stage.json (its metrics) and
                                    agent.json (protocol `coa`: agent/format.py)
    runs/<name>/summary.json        every stage's metrics and evaluations
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from ..agent.format import AgentFormat, write_format
from ..config import save_config
from ..engines import EngineConfig, make_engine
from ..envs.registry import check_task_counts, make_tasks
from ..errors import UserError, lookup
from ..models import load_model, load_tokenizer, resolve_model
from ..models.lora import save_policy
from ..stats import wilson
from .config import AutoCoAConfig
from .simulate import CoAEpisode, RealObserver, run_episodes
from .stages import STAGES, StageContext


def check_stages(stages: list[str]) -> None:
    """Every name must be a stage (the error names the closest ones); no stage twice."""
    if not stages:
        raise UserError(f"'stages' is empty: name at least one of {', '.join(STAGES)}")
    for s in stages:
        lookup("AutoCoA stage", s, STAGES)
    if len(set(stages)) != len(stages):
        raise UserError(f"'stages' lists a stage twice: {stages}")


def evaluate(ctx: StageContext, episodes: int | None = None) -> dict[str, Any]:
    """Greedy episodes on the held-out split in the real env: success (Wilson 95%), reward, searches."""
    e = ctx.cfg.eval
    tasks = make_tasks(ctx.cfg.env, e.split, n=episodes or e.episodes)
    eps = run_episodes(ctx.synced_engine(), ctx.tokenizer, tasks, ctx.cfg.rollout,
                       RealObserver(ctx.cfg.env, ctx.tokenizer), seed=ctx.cfg.seed + 7, temperature=0.0)
    return summarize(eps)


def summarize(eps: list[CoAEpisode]) -> dict[str, Any]:
    n, wins = len(eps), sum(e.won for e in eps)
    ci = wilson(wins, n)
    return {"episodes": n, "wins": wins, "success_rate": ci.value, "success_ci95": [ci.low, ci.high],
            "mean_reward": sum(e.reward for e in eps) / max(1, n),
            "mean_searches": sum(e.searches for e in eps) / max(1, n),
            "format_ok_rate": sum(e.format_ok for e in eps) / max(1, n),
            "terminations": {t: sum(e.termination == t for e in eps) for t in sorted({e.termination for e in eps})}}


def save_stage(run_dir: Path, stage: str, model: Any, tokenizer: Any, record: dict) -> Path:
    """Write `run_dir/<stage>/` atomically (temporary directory renamed into place)."""
    final, tmp = run_dir / stage, run_dir / f".tmp-{stage}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(model, tmp)
    tokenizer.save_pretrained(tmp)
    write_format(tmp, AgentFormat(protocol="coa"))
    (tmp / "stage.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def run_autocoa(cfg: AutoCoAConfig, console: Any = None) -> Path:
    """Run `cfg.stages` in order from `cfg.model`; returns the run directory."""
    from ..train.logging import progress as make_progress

    check_stages(cfg.stages)
    bad = [s for s in cfg.eval.after if s != "base" and s not in cfg.stages]
    if bad:
        raise UserError(f"eval.after names {bad}, which are not in stages {cfg.stages} (or 'base')")
    sft = any(s.startswith("sft") for s in cfg.stages)
    check_task_counts((cfg.env, cfg.gold.split, cfg.gold.tasks if sft else 0, cfg.gold.start),
                      (cfg.env, "train", cfg.rl.train_tasks, 0), (cfg.env, cfg.eval.split, cfg.eval.episodes, 0))
    run_dir = Path(cfg.out_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    path = resolve_model(cfg.model)
    tokenizer, model = load_tokenizer(path), load_model(path)
    cfg.rollout.context = min(cfg.rollout.context, int(model.config.max_position_embeddings))
    ctx = StageContext(cfg, model, tokenizer, engine=make_engine(path, EngineConfig(), tokenizer))
    after = cfg.eval.after or [cfg.stages[-1]]
    summary: dict[str, Any] = {"stages": {}, "eval": {}}
    try:
        with make_progress(console) as prog:
            ctx.progress = prog
            if "base" in after:
                summary["eval"]["base"] = evaluate(ctx)
            for stage in cfg.stages:
                t0 = time.time()
                metrics = {**STAGES[stage](ctx), "stage_seconds": round(time.time() - t0, 2)}
                record = {"stage": stage, "metrics": metrics}
                if stage in after:
                    record["eval"] = summary["eval"][stage] = evaluate(ctx)
                summary["stages"][stage] = metrics
                out = save_stage(run_dir, stage, model, tokenizer, record)
                _report(console, stage, record, out)
    finally:
        ctx.engine.close()
    (run_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return run_dir


def _report(console: Any, stage: str, record: dict, out: Path) -> None:
    if console is None:
        return
    m = record["metrics"]
    shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
    console.print(f"[bold]{stage}[/]: {shown}; checkpoint {out}")
    if "eval" in record:
        e = record["eval"]
        console.print(f"  held-out: success {100 * e['success_rate']:.1f}% [{100 * e['success_ci95'][0]:.1f}, "
                      f"{100 * e['success_ci95'][1]:.1f}] over {e['episodes']}, searches {e['mean_searches']:.2f}")
