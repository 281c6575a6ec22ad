"""`stratarl eval` and `stratarl quickstart`."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.table import Table

from ..errors import UserError
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
    strategy: bool = typer.Option(None, "--strategy/--no-strategy", show_default=False,
                                  help="Model agent plans a strategy first [default: as the checkpoint was trained]."),
    prompt_mode: str = typer.Option(None, "--prompt-mode", show_default=False,
                                    help="window or chat step prompts [default: the checkpoint's, else window]."),
    history: int = typer.Option(None, show_default=False,
                                help="Past steps in each step prompt, -1 all [default: the checkpoint's, else 2]."),
    think: bool = typer.Option(None, "--think/--no-think", show_default=False,
                               help="Ask for <think> before the action [default: the checkpoint's, else off]."),
    prime: bool = typer.Option(None, "--prime/--no-prime", show_default=False,
                               help="Start each reply with <action> (instruct models) [default: the checkpoint's, else off]."),
    engine: str = typer.Option("hf", help="hf, openai or vllm."),
    max_steps: int = typer.Option(None, help="Horizon (default: the env's)."),
    workers: int = typer.Option(None, help="Env worker processes (default: one per two cores)."),
    seed: int = typer.Option(0, help="Seed."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    out: Path = typer.Option(None, help="Also write every trajectory to this JSONL file."),
) -> None:
    """Success rate (95% Wilson interval), score, steps, invalid actions and terminations on a split. A
    checkpoint is evaluated in the prompt format it was trained with (its agent.json); flags override it."""
    from ..agent.format import describe_format, format_of, format_origin
    from ..config import load_config_and_format, to_dict
    from ..evaluate import EvalConfig, evaluate
    from ..types import to_json

    data = dict(model=model, env=env, split=split, episodes=episodes, start=start, agent=agent, engine=engine,
                max_steps=max_steps, workers=workers, seed=seed, temperature=temperature)
    prompt = dict(mode=prompt_mode, history=history, think=think, prime=prime)
    data["prompt"] = {k: v for k, v in prompt.items() if v is not None}  # unset: the checkpoint's, or the default
    if strategy is not None:
        data["strategy"] = strategy
    cfg, source = load_config_and_format(EvalConfig, data=data)
    fmt = format_of(cfg)
    if agent == "model" and not json_out:
        console.print(describe_format(fmt, source), highlight=False)
    report, trajs = evaluate(cfg)
    if out:
        out.write_bytes(b"".join(to_json(t) + b"\n" for t in trajs))
    if json_out:
        rep = report.as_dict()
        if agent == "model":
            rep["format"] = {**to_dict(fmt), "source": format_origin(source)}
        print(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode())
    else:
        console.print(report_table([report], "evaluation"))


@app.command("quickstart", context_settings={"allow_extra_args": True})
def quickstart(
    config: Path = typer.Option(Path("configs/quickstart.yaml"), help="The quickstart config."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. iterations=4."),
    baselines: bool = typer.Option(False, "--baselines", help="Only evaluate the gold and random agents."),
) -> None:
    """The main job: tiny model, warm-up SFT, StraTA RL, held-out evaluation before and after, report."""
    if baselines:
        return _baselines()
    from ..config import load_config
    from ..train.config import TrainConfig
    from ..train.pipeline import run_training

    if not config.is_file():
        raise UserError(f"{config} not found: run from the repository root or pass --config PATH")
    cfg = load_config(TrainConfig, config, overrides or [])
    run_dir = run_training(cfg, console=console, overwrite=True)
    console.print(before_after_table(run_dir))
    console.print(f"report: {run_dir / 'report.md'}  ·  browse the episodes: stratarl view {run_dir}")


def before_after_table(run_dir: Path) -> Table:
    """Held-out success after warm-up and after RL, and their difference, from a run's eval files."""
    from ..stats import newcombe_difference

    b, a = (orjson.loads((run_dir / f"eval_{n}.json").read_bytes()) for n in ("before", "after"))
    table = Table(title=f"held-out success, {a['env']} ({a['split']} split)")
    for col in ("checkpoint", "episodes", "success", "95% interval"):
        table.add_column(col)
    for name, r in (("warm-up SFT", b), ("after StraTA RL", a)):
        lo, hi = r["success_ci95"]
        table.add_row(name, str(r["episodes"]), f"{100 * r['success_rate']:.1f}%", f"[{100 * lo:.1f}, {100 * hi:.1f}]")
    d = newcombe_difference(b["wins"], b["episodes"], a["wins"], a["episodes"])
    table.add_row("difference", "", f"{100 * d.value:+.1f} pts", f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]")
    return table


def _baselines(episodes: int = 50) -> None:
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
