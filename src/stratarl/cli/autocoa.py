"""`stratarl autocoa CONFIG [overrides]`: AutoCoA's staged training (SFT 1-3, RL sim, RL real)."""

from __future__ import annotations

from pathlib import Path

import typer

from .main import app, console


@app.command("autocoa")
def autocoa_cmd(
    config: Path = typer.Argument(..., help="YAML config (see configs/autocoa_tiny.yaml)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. stages=[sft2,rl_real] rl.lr=1e-4."),
) -> None:
    """Contrastive when-to-act SFT -> CoT+CoA SFT (masked, then unmasked) -> RL in a simulated env -> RL in the
    real search env; a checkpoint per stage in runs/<name>/<stage>/ (docs/autocoa.md)."""
    from ..autocoa.config import AutoCoAConfig
    from ..autocoa.pipeline import run_autocoa
    from ..config import load_config

    cfg = load_config(AutoCoAConfig, config, overrides or [])
    console.print(f"done: {run_autocoa(cfg, console)}")
