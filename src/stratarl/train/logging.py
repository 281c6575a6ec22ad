"""Run logging: `metrics.jsonl` (one line per iteration), TensorBoard events, optional W&B, and a
rich progress bar with ETA in the terminal."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

TIMING_PREFIX = "time/"


class RunLogger:
    """Writes every iteration's metrics to all sinks."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "stratarl", config: dict | None = None, resume_at: int | None = None):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        if resume_at is not None:
            self._truncate(resume_at)
        self.tb = _tensorboard(self.dir / "tb") if tensorboard else None
        self.wandb = _wandb(wandb_project, self.dir.name, config) if wandb else None

    def _truncate(self, upto: int) -> None:
        """Keep the lines of iterations < `upto` (what the checkpoint being resumed had seen)."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_bytes().splitlines() if ln and orjson.loads(ln).get("iteration", -1) < upto]
        self.path.write_bytes(b"".join(ln + b"\n" for ln in keep))

    def log(self, iteration: int, metrics: dict[str, Any]) -> None:
        row = {"iteration": iteration, **{k: _clean(v) for k, v in metrics.items()}}
        with self.path.open("ab") as f:
            f.write(orjson.dumps(row) + b"\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "iteration":
                    self.tb.add_scalar(k, v, iteration)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(row, step=iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [orjson.loads(ln) for ln in path.read_bytes().splitlines() if ln] if path.exists() else []


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a default dependency
        return None
    return SummaryWriter(log_dir=str(path))


def _wandb(project: str, name: str, config: dict | None):
    try:
        import wandb
    except ImportError:
        Console(stderr=True).print("[yellow]logging.wandb=true but wandb is not installed; skipping W&B[/]")
        return None
    return wandb.init(project=project, name=name, config=config or {})


def progress(console: Console | None = None, transient: bool = False) -> Progress | LineProgress:
    """The progress display of long commands (train, sft): a rich bar with ETA in a terminal, and
    plain lines every ~10% (or 30 s) when the output goes to a file or a CI log."""
    console = console or Console()
    if not console.is_terminal:
        return LineProgress(console)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=transient)


class LineProgress:
    """`rich.progress.Progress`'s add_task / update, printed as occasional lines."""

    def __init__(self, console: Console):
        self.console, self.tasks = console, {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: object) -> int:
        tid = len(self.tasks)
        self.tasks[tid] = {"desc": description, "total": total or 0, "done": completed, "t0": time.time(),
                           "last": 0.0, "status": str(fields.get("status", ""))}
        return tid

    def update(self, tid: int, advance: float = 0, status: str | None = None, completed: float | None = None,
               **_: object) -> None:
        t = self.tasks[tid]
        advance = completed - t["done"] if completed is not None else advance
        t["done"] += advance
        t["status"] = status if status is not None else t["status"]
        now, frac = time.time(), t["done"] / t["total"] if t["total"] else 0.0
        step = max(1.0, t["total"] / 10)
        if t["done"] >= t["total"] or now - t["last"] > 30 or int(t["done"] / step) != int((t["done"] - advance) / step):
            elapsed = now - t["t0"]
            eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
            self.console.print(f"{t['desc']} {t['done']:.0f}/{t['total']:.0f} {t['status']} "
                               f"(elapsed {elapsed:.0f}s, ETA {eta:.0f}s)", highlight=False)
            t["last"] = now
