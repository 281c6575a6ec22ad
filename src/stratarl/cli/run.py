"""`stratarl eval` and `stratarl quickstart`."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.table import Table

from .main import app, console


def report_table(reports: list, title: str) -> Table:
    table = Table(title=title)
    for col in ("agent", "env", "split", "episodes", "success [95% CI]", "score", "steps", "invalid", "terminations"):
        table.add_column(col)
    for r in reports:
        terms = ", ".join(f"{k} {v}" for k, v in r.terminations.items())
        table.add_row(r.agent, r.env, r.split, str(r.episodes), r.success.fmt(), f"{r.mean_score:.2f}",
                      f"{r.mean_steps:.1f}", f"{100 * r.invalid_rate:.1f}%", terms)
    return table


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument("tiny", help="Model name or checkpoint directory (agent 'model')."),
    env: str = typer.Option("twx:cookingworld", "--env", help="Environment id (with ?params)."),
    split: str = typer.Option("test", help="train, dev or test."),
    episodes: int = typer.Option(100, help="Number of episodes (tasks)."),
    start: int = typer.Option(0, help="Index of the first task."),
    agent: str = typer.Option("model", help="model, gold or random."),
    strategy: bool = typer.Option(False, "--strategy", help="Model agent plans a strategy first."),
    engine: str = typer.Option("hf", help="hf, openai or vllm."),
    max_steps: int = typer.Option(None, help="Horizon (default: the env's)."),
    workers: int = typer.Option(None, help="Env worker processes (default: one per two cores)."),
    seed: int = typer.Option(0, help="Seed."),
    prime: bool = typer.Option(False, "--prime", help="Start each reply with <action> (instruct models)."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Path = typer.Option(None, help="Also write every trajectory to this JSONL file."),
) -> None:
    """Success rate (95% Wilson interval), score, steps, invalid actions and terminations on a split."""
    from ..config import load_config
    from ..evaluate import EvalConfig, evaluate
    from ..types import to_json

    cfg = load_config(EvalConfig, data=dict(
        model=model, env=env, split=split, episodes=episodes, start=start, agent=agent, strategy=strategy,
        engine=engine, max_steps=max_steps, workers=workers, seed=seed, prime=prime, temperature=temperature))
    report, trajs = evaluate(cfg)
    if out:
        out.write_bytes(b"".join(to_json(t) + b"\n" for t in trajs))
    if json_out:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        console.print(report_table([report], "evaluation"))


@app.command("quickstart")
def quickstart(episodes: int = typer.Option(50, help="Episodes per agent.")) -> None:
    """The main job: evaluate the gold and random agents on twx:cookingworld (test split)."""
    from ..evaluate import EvalConfig, evaluate

    reports = []
    for agent in ("gold", "random"):
        with console.status(f"evaluating the {agent} agent on twx:cookingworld ..."):
            reports.append(evaluate(EvalConfig(agent=agent, episodes=episodes))[0])
    console.print(report_table(reports, "twx:cookingworld, test split"))


@app.command("view")
def view_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (with trajectories/)."),
    out: Path = typer.Option(None, help="Output HTML file (default: RUN_DIR/viewer.html)."),
    last: int = typer.Option(None, help="Only the last N iterations."),
) -> None:
    """Write a self-contained HTML trajectory viewer for a run."""
    from ..view import build_viewer

    path = build_viewer(run_dir, out, last)
    console.print(f"wrote {path} — open it in a browser")
