"""What the benchmark runners share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def save_results(out_dir: str | Path, results: Any) -> Path:
    """Write `results` as `<out_dir>/results.json` atomically (a benchmark killed midway leaves the last
    complete file), and return its path."""
    path = Path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
    return path


def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in its own spawned process, which then exits: a training run leaves ~0.7 GB behind in
    the process that ran it (allocator caches, JVM pool buffers), which over many runs in one process
    exhausted the 24 GiB here. The child dies with the benchmark (a killed benchmark leaves no run going)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_die_with_parent) as ex:
        return ex.submit(fn, *args).result()


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the child finishes its run after a killed parent


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (dpi 110) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
