"""The `stratarl` command. Each command group lives in its own module and imports heavy
dependencies (torch, transformers) inside the command body, so `stratarl --help` stays fast."""

from .main import app, main

__all__ = ["app", "main"]
