"""`stratarl train`, `stratarl sft`, `stratarl report`, `stratarl config`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .main import CONFIG_HELP, OVERRIDES_HELP, app, console, load_entry_config

CONFIGS = {"train": ("stratarl.train.config", "TrainConfig"), "sft": ("stratarl.train.sft", "SFTConfig"),
           "eval": ("stratarl.evaluate", "EvalConfig"), "autocoa": ("stratarl.autocoa.config", "AutoCoAConfig"),
           "calibrate": ("stratarl.calibrate.pipeline", "CalibrateConfig")}


def _config_class(name: str) -> type:
    import importlib

    from ..errors import lookup

    module, cls = lookup("config", name, CONFIGS)
    return getattr(importlib.import_module(module), cls)


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train_cmd(
    config: str = typer.Argument(None, help=CONFIG_HELP, show_default=False),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last complete checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run of the same name."),
) -> None:
    """Warm-up SFT (optional) -> evaluation -> RL iterations -> evaluation -> report."""
    from ..train.config import TrainConfig
    from ..train.pipeline import run_training

    cfg = load_entry_config(TrainConfig, config, overrides)
    run_dir = run_training(cfg, resume=resume, console=console, overwrite=overwrite)
    console.print(f"done: {run_dir}")


@app.command("sft")
def sft_cmd(
    config: str = typer.Argument(None, help=CONFIG_HELP, show_default=False),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Supervised fine-tuning (gold trajectories, trajectory JSONL, or OpenAI-format messages)."""
    from ..train.sft import SFTConfig, run_sft

    run_sft(load_entry_config(SFTConfig, config, overrides), console)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A training run directory.")) -> None:
    """Write report.md and PNG plots for a run."""
    from ..report import write_report

    console.print(f"wrote {write_report(run_dir)}")


@app.command("config")
def config_cmd(entry: str = typer.Argument("train", help="train, sft, eval, calibrate or autocoa."),
               markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table.")) -> None:
    """Every key of an entry point's config, with its type, default and meaning."""
    from ..config import describe, markdown_table

    rows = describe(_config_class(entry))
    if markdown:
        print(markdown_table(_config_class(entry)), end="")
        return
    table = Table(title=f"{entry} config")
    for col in ("key", "type", "default", "meaning"):
        table.add_column(col)
    for key, tp, default, doc in rows:
        table.add_row(key, tp, repr(default), doc)
    console.print(table)
