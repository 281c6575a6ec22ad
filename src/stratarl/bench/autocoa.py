"""`stratarl bench autocoa`: ReAct zero-shot vs AutoCoA stage ablations on held-out search-QA questions.

Rows (all evaluated greedily on the same held-out questions of the base config's env and `eval.split`):

    react_zero_shot     the starting model, no training, ReAct step prompts through the episode runner
    sft2                AutoCoA SFT stage 2 only (CoT+CoA, observations masked)
    sft123              SFT stages 1+2+3
    sft123_rl_sim       + RL stage 1 in the simulated env
    sft123_rl_sim_real  + RL stage 2 in the real env

`sft2` is its own run; the last three are checkpoints of one run (`eval.after=[sft3, rl_sim, rl_real]`).
Reported: success (Wilson 95% interval), mean answer reward (0 on a format failure), mean searches per
episode, and the share of CoA episodes that kept the protocol format. Written to `<out_dir>/results.json` and `<out_dir>/results.md`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..autocoa.config import AutoCoAConfig
from ..autocoa.pipeline import run_autocoa
from ..config import load_config
from ..stats import wilson

ROWS = ("react_zero_shot", "sft2", "sft123", "sft123_rl_sim", "sft123_rl_sim_real")


@dataclass
class AutoCoABenchConfig:
    """`stratarl bench autocoa`."""

    config: str = "configs/bench_autocoa.yaml"
    """Base AutoCoAConfig YAML (model, env, data and step counts)."""
    eval_episodes: int = 50
    """Held-out questions per row."""
    out_dir: str = "runs/bench_autocoa"
    """Where results and the training runs go."""
    overrides: list[str] = field(default_factory=list)
    """Dotted overrides of the base config."""


def react_zero_shot(base: AutoCoAConfig, episodes: int) -> dict[str, Any]:
    """The untrained model with ReAct step prompts (`rollout.evaluate.run_model_agent`), greedy."""
    from ..envs.registry import make_tasks
    from ..evaluate import EvalConfig
    from ..rollout.evaluate import run_model_agent

    ecfg = EvalConfig(model=base.model, env=base.env, split=base.eval.split, episodes=episodes, workers=1,
                      seed=base.seed)
    trajs = run_model_agent(ecfg, make_tasks(base.env, base.eval.split, n=episodes))
    n, wins = len(trajs), sum(t.won for t in trajs)
    ci = wilson(wins, n)
    searches = [sum(s.action.lower().startswith("search") for s in t.steps) for t in trajs]
    return {"episodes": n, "wins": wins, "success_rate": ci.value, "success_ci95": [ci.low, ci.high],
            "mean_reward": sum(t.outcome for t in trajs) / max(1, n), "mean_searches": sum(searches) / max(1, n)}


def run_autocoa_bench(cfg: AutoCoABenchConfig, console: Any = None) -> dict[str, Any]:
    base = load_config(AutoCoAConfig, cfg.config, cfg.overrides)
    base = dataclasses.replace(base, out_dir=cfg.out_dir, eval=dataclasses.replace(base.eval, episodes=cfg.eval_episodes))
    rows: dict[str, Any] = {}
    t0 = time.time()
    rows["react_zero_shot"] = react_zero_shot(base, cfg.eval_episodes)
    only2 = dataclasses.replace(base, name="sft2_only", stages=["sft2"], eval=dataclasses.replace(base.eval, after=["sft2"]))
    rows["sft2"] = _summary(run_autocoa(only2, console))["eval"]["sft2"]
    full = dataclasses.replace(base, name="full", stages=["sft1", "sft2", "sft3", "rl_sim", "rl_real"],
                               eval=dataclasses.replace(base.eval, after=["sft3", "rl_sim", "rl_real"]))
    ev = _summary(run_autocoa(full, console))["eval"]
    rows.update({"sft123": ev["sft3"], "sft123_rl_sim": ev["rl_sim"], "sft123_rl_sim_real": ev["rl_real"]})
    result = {"model": base.model, "env": base.env, "split": base.eval.split, "eval_episodes": cfg.eval_episodes,
              "seconds": round(time.time() - t0, 1), "rows": rows}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    (out / "results.md").write_text(markdown_table(result))
    return result


def _summary(run_dir: Path) -> dict[str, Any]:
    return orjson.loads((run_dir / "summary.json").read_bytes())


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| row | success | 95% CI | mean reward | mean searches | format ok |", "|---|---|---|---|---|---|"]
    for name in ROWS:
        r = result["rows"][name]
        lo, hi = r["success_ci95"]
        lines.append(f"| {name} | {r['wins']}/{r['episodes']} ({100 * r['success_rate']:.1f}%) | "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {r['mean_reward']:.3f} | {r['mean_searches']:.2f} | {_fmt_ok(r)} |")
    return "\n".join(lines) + "\n"


def _fmt_ok(row: dict[str, Any]) -> str:
    """Share of episodes whose every turn kept the protocol (CoA rows only; ReAct has its own format)."""
    return f"{100 * row['format_ok_rate']:.0f}%" if "format_ok_rate" in row else "-"


def print_results(result: dict[str, Any], json_out: bool, console: Any) -> None:
    if json_out:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    from rich.table import Table

    table = Table(title=f"AutoCoA on {result['env']} ({result['split']}, {result['eval_episodes']} questions)")
    for col in ("row", "success", "95% CI", "mean reward", "mean searches", "format ok"):
        table.add_column(col)
    for name in ROWS:
        r = result["rows"][name]
        lo, hi = r["success_ci95"]
        table.add_row(name, f"{r['wins']}/{r['episodes']}", f"[{100 * lo:.1f}, {100 * hi:.1f}]%",
                      f"{r['mean_reward']:.3f}", f"{r['mean_searches']:.2f}", _fmt_ok(r))
    console.print(table)
