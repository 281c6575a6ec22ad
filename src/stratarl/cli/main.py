"""Root of the `stratarl` command: registers the command groups and turns user errors into
one-line messages with a non-zero exit code (no tracebacks for user mistakes)."""

from __future__ import annotations

import sys
from typing import Any

import click
import typer
from rich.console import Console

from ..errors import UserError

try:  # recent typer (0.29 here) raises the exceptions of its vendored click, not of the `click` package
    from typer._click import exceptions as _typer_click
except ImportError:
    _typer_click = click.exceptions
ABORT = (click.exceptions.Abort, typer.Abort)
CLICK_ERRORS = (click.exceptions.ClickException, _typer_click.ClickException)

app = typer.Typer(
    name="stratarl",
    help="Step-level RL for LLM agents on multi-turn text environments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=150)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=150)


CONFIG_HELP = "YAML config; optional: KEY=VALUE overrides alone start from the defaults."
OVERRIDES_HELP = "Dotted overrides, e.g. optim.lr=1e-5 iterations=3."


def load_entry_config(cls: type, config: str | None, overrides: list[str] | None) -> Any:
    """An entry point's config from `[CONFIG] [KEY=VALUE ...]`; says so when a starting checkpoint gave the
    agent format."""
    from ..agent.format import describe_format, format_of
    from ..config import config_args, load_config_and_format

    path, overrides = config_args(config, overrides)
    cfg, source = load_config_and_format(cls, path, overrides)
    if source is not None and source.checkpoint:
        console.print(describe_format(format_of(cfg), source), highlight=False)
    return cfg


def _register() -> None:
    from . import autocoa, bench, calibrate, envs, models, run, synth, train  # noqa: F401 - each adds its commands


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script (`argv` None); tests pass `argv` and run in-process."""
    if argv is None:
        from ..allocator import reexec_with_jemalloc

        reexec_with_jemalloc()
    _register()
    try:
        result = app(args=argv, standalone_mode=False)
    except ABORT:
        err_console.print("[yellow]aborted[/]")
        sys.exit(130)
    except CLICK_ERRORS as e:
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    if isinstance(result, int) and result != 0:
        sys.exit(result)
