"""`stratarl envs`, `stratarl envs show`, `stratarl envs gold`, `stratarl play`, `stratarl bench envs`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .bench import bench_app
from .main import app, console

envs_app = typer.Typer(help="List, inspect and replay environments.", invoke_without_command=True)
app.add_typer(envs_app, name="envs")


@envs_app.callback()
def envs_list(ctx: typer.Context) -> None:
    """List registered environment ids (no subcommand), or run a subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    from ..envs.registry import DYNAMIC, all_specs

    table = Table(title="stratarl environments", show_lines=False)
    table.add_column("id", style="bold cyan", no_wrap=True)
    table.add_column("description")
    for spec in all_specs().values():
        table.add_row(spec.id, spec.description)
    for prefix in DYNAMIC:
        table.add_row(f"{prefix}:<name>", "see `stratarl envs show " + prefix + ":<name>`")
    console.print(table)
    console.print("Parameters go after '?': [cyan]twx:cookingworld?numLocations=3&numIngredients=2[/]")


@envs_app.command("show")
def envs_show(env_id: str = typer.Argument(..., help="Environment id, optionally with ?params.")) -> None:
    """Details of one environment: parameters, splits and their sizes."""
    from ..envs.registry import parse_env_id

    spec, params = parse_env_id(env_id)
    console.print(f"[bold cyan]{spec.id}[/]  ({spec.family})\n{spec.description}")
    console.print(f"default horizon: {spec.max_steps} steps; episode reward: {spec.outcome}; "
                  f"gold trajectories: {'yes' if spec.has_expert else 'no'}")
    if spec.params:
        table = Table(title="parameters")
        for col in ("name", "type", "value", "range", "meaning"):
            table.add_column(col)
        for name, p in spec.params.items():
            rng = f"{p.low:g}..{p.high:g}" if p.low is not None else (", ".join(p.choices or ()) or "")
            table.add_row(name, p.type.__name__, str(params[name]), rng, p.doc)
        console.print(table)
    if spec.split_sizes:
        sizes = spec.split_sizes(params)
        console.print("splits: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))


@envs_app.command("gold")
def envs_gold(
    env_id: str = typer.Argument(..., help="Environment id, optionally with ?params."),
    split: str = typer.Option("train", help="train, dev or test."),
    n: int = typer.Option(5, "-n", help="Number of tasks."),
    start: int = typer.Option(0, help="Index of the first task."),
    out: Path = typer.Option(Path("gold.jsonl"), help="Output JSONL (one Trajectory per line)."),
) -> None:
    """Write gold trajectories as JSONL records (the `Trajectory` schema)."""
    from rich.progress import track

    from ..envs.gold import gold_trajectories
    from ..envs.registry import make_tasks
    from ..types import to_json

    tasks = make_tasks(env_id, split, n=n, start=start)
    won = 0
    with out.open("wb") as f:
        for traj in track(gold_trajectories(tasks), total=len(tasks), description="gold", console=console):
            f.write(to_json(traj) + b"\n")
            won += traj.won
    console.print(f"wrote {len(tasks)} trajectories to {out} ({won}/{len(tasks)} won)")


@app.command("play")
def play(
    env_id: str = typer.Argument(..., help="Environment id, optionally with ?params."),
    split: str = typer.Option("train", help="train, dev or test."),
    index: int = typer.Option(0, help="Task index inside the split."),
) -> None:
    """Play an environment in the terminal. `help` lists admissible actions; `quit` ends."""
    from ..envs.play import play_loop

    play_loop(env_id, split, index, console)


@bench_app.command("envs")
def bench_envs(
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    steps: int = typer.Option(600, help="Env steps per measurement."),
    workers: int = typer.Option(2, help="Pool workers for the parallel measurement."),
    families: str = typer.Option("twx,sciworld,alfworld-gen", help="Comma-separated families to measure (twx, sciworld, alfworld-gen)."),
) -> None:
    """Env steps/s per family, directly and through the EnvPool, with the pool overhead as a ratio."""
    from ..bench.envs import WORKLOADS, print_results, run_env_bench
    from ..errors import lookup

    chosen = tuple(f.strip() for f in families.split(",") if f.strip())
    for f in chosen:
        lookup("benchmark family", f, WORKLOADS)
    results = run_env_bench(steps=steps, workers=workers, families=chosen)
    print_results(results, json_out, console)
