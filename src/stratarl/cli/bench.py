"""`stratarl bench ...`: benchmarks that print figures and ratios against a baseline measured in
the same run."""

from __future__ import annotations

import typer

from .main import app

bench_app = typer.Typer(help="Benchmarks: figures and ratios against a baseline measured in the same run.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
