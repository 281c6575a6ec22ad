"""`stratarl calibrate CONFIG [overrides]`: STeCa / IPR from a warm-up checkpoint (calibrate/pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from .main import CONFIG_HELP, app, console, load_entry_config


@app.command("calibrate")
def calibrate_cmd(
    config: str = typer.Argument(None, help=CONFIG_HELP + " E.g. configs/calibrate_tiny.yaml.", show_default=False),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. method=ipr iterations=2."),
) -> None:
    """Warm-up SFT -> exploration and MC step values -> calibration / preference pairs -> training -> held-out
    evaluation; datasets as JSONL and report.json under runs/<name>/."""
    from ..calibrate.pipeline import CalibrateConfig, print_report, run_calibrate

    cfg = load_entry_config(CalibrateConfig, config, overrides)
    report = run_calibrate(cfg, console)
    print_report(report, console)
    console.print(f"report: {Path(cfg.out_dir) / cfg.name / 'report.json'}")
