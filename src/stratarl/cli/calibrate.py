"""`stratarl calibrate CONFIG [overrides]`: STeCa / IPR from a warm-up checkpoint (calibrate/pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from .main import app, console


@app.command("calibrate")
def calibrate_cmd(
    config: Path = typer.Argument(..., help="YAML config (e.g. configs/calibrate_tiny.yaml)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. method=ipr iterations=2."),
) -> None:
    """Warm-up SFT -> exploration and MC step values -> calibration / preference pairs -> training -> held-out
    evaluation; datasets as JSONL and report.json under runs/<name>/."""
    from ..calibrate.pipeline import CalibrateConfig, print_report, run_calibrate
    from ..config import load_config

    cfg = load_config(CalibrateConfig, config, overrides or [])
    report = run_calibrate(cfg, console)
    print_report(report, console)
    console.print(f"report: {Path(cfg.out_dir) / cfg.name / 'report.json'}")
