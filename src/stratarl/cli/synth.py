"""`stratarl synth trajectories CONFIG` and `stratarl synth environments CONFIG` (ASTRA, docs/synth.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .main import app, console

synth_app = typer.Typer(help="ASTRA data synthesis: SFT trajectories from tool graphs, RL tool environments "
                             "from QA decompositions.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


def _track(iterable, description: str = "", total: int | None = None):
    from rich.progress import track

    return track(iterable, description=description, total=total, console=console)


def _args(config: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """CONFIG is optional: a first argument that looks like `key=value` is an override."""
    if config is not None and "=" in str(config) and not config.exists():
        return None, [str(config), *(overrides or [])]
    return config, list(overrides or [])


def _summary(report: dict, keys: list[str]) -> None:
    console.print(" | ".join(f"{k} {report[k]}" for k in keys if k in report))
    if report.get("teacher"):
        console.print("teacher: " + json.dumps(report["teacher"]))


@synth_app.command("trajectories")
def synth_trajectories(
    config: Path = typer.Argument(None, help="YAML config (e.g. configs/synth_trajectories.yaml); optional."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. chains=enumerate teacher.base_url=..."),
) -> None:
    """Tool graph -> chains -> tasks -> trajectories -> 7-dim scores -> filtered SFT data (OpenAI messages)."""
    from ..config import load_config
    from ..synth.pipeline import SynthTrajectoriesConfig, run_trajectories

    cfg = load_config(SynthTrajectoriesConfig, *_args(config, overrides))
    report = run_trajectories(cfg, _track)
    _summary(report, ["chains", "tasks", "trajectories", "teacher_rejected", "fallbacks", "failed_calls",
                      "mean_score", "kept"])
    console.print(f"SFT data: {report['sft_file']} (train with `stratarl sft` data.source=messages "
                  f"data.path={report['sft_file']}); report: {Path(cfg.out_dir) / cfg.name / 'report.json'}")


@synth_app.command("environments")
def synth_environments(
    config: Path = typer.Argument(None, help="YAML config (e.g. configs/synth_environments.yaml); optional."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. qs_percentile=80 merge=false"),
) -> None:
    """QA decompositions -> QS filter -> verified tools -> merged tools -> a `tools:<dataset>` environment."""
    from ..config import load_config
    from ..synth.pipeline import SynthEnvironmentsConfig, run_environments

    cfg = load_config(SynthEnvironmentsConfig, *_args(config, overrides))
    report = run_environments(cfg, _track)
    _summary(report, ["records", "qs_threshold", "kept", "tool_specs", "verified", "rejected", "merges",
                      "merges_rejected", "final_tools", "final_items"])
    console.print(f"dataset {report['dataset']} in {report['dataset_dir']} (found from this directory via "
                  f"runs/*/tools, or set STRATARL_TOOLS_DATA={Path(report['dataset_dir']).parent})")
