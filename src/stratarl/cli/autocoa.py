"""`stratarl autocoa CONFIG [overrides]`: AutoCoA's staged training (SFT 1-3, RL sim, RL real)."""

from __future__ import annotations

import typer

from .main import CONFIG_HELP, app, console, load_entry_config


@app.command("autocoa")
def autocoa_cmd(
    config: str = typer.Argument(None, help=CONFIG_HELP + " E.g. configs/autocoa_tiny.yaml.", show_default=False),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. stages=[sft2,rl_real] rl.lr=1e-4."),
) -> None:
    """Contrastive when-to-act SFT -> CoT+CoA SFT (masked, then unmasked) -> RL in a simulated env -> RL in the
    real search env; a checkpoint per stage in runs/<name>/<stage>/ (docs/autocoa.md)."""
    from ..autocoa.config import AutoCoAConfig
    from ..autocoa.pipeline import run_autocoa

    cfg = load_entry_config(AutoCoAConfig, config, overrides)
    console.print(f"done: {run_autocoa(cfg, console)}")
