"""`stratarl bench ray`: env steps/s of the Ray executor against the local EnvPool, in one run.

Workload: that of `stratarl bench envs` for TextWorldExpress (`twx:cookingworld`, uniformly random
admissible actions, episodes cut at 30 steps, `concurrent` episodes stepped as one batch). Measured:
the local pool (worker processes) and the Ray pool (actors) with 1 and 2 workers; each configuration
first runs a quarter of its steps untimed, so every JVM is equally warm. Ratios: Ray / local steps/s
with the same number of workers (below 1: Ray's per-call overhead costs throughput). The time Ray
takes to start (or join a cluster) is reported apart and not counted in any steps/s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from ..envs.pool import EnvPool
from ..envs.ray_pool import RayEnvPool, _ray, connect
from .envs import WORKLOADS, _Actor, _run, _tasks_and_gold


def _steps_per_s(make_pool: Callable[[], Any], steps: int, concurrent: int) -> float:
    tasks, gold = _tasks_and_gold("twx", 8)
    pool = make_pool()
    try:
        _run(pool, _Actor("twx", seed=1), tasks, gold, max(50, steps // 4), concurrent)
        return _run(pool, _Actor("twx"), tasks, gold, steps, concurrent)
    finally:
        pool.close()


def run_ray_bench(steps: int = 600, concurrent: int = 8, cpus_per_worker: float = 1.0, address: str = "") -> dict:
    """Steps/s of local and Ray pools with 1 and 2 workers, and Ray/local ratios."""
    # Ray runs its workers 15 nice levels below the driver by default; the local pool's workers run at
    # the driver's priority, so a local Ray started here does the same (no effect on a running cluster).
    os.environ.setdefault("RAY_worker_niceness", "0")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    connect(address)
    ray_start = time.perf_counter() - t0
    ray = _ray()
    rows = []
    for workers in (1, 2):
        local = _steps_per_s(lambda w=workers: EnvPool(num_workers=w), steps, concurrent)
        remote = _steps_per_s(lambda w=workers: RayEnvPool(num_workers=w, cpus_per_worker=cpus_per_worker),
                              steps, concurrent)
        rows.append({"workers": workers, "local_steps_per_s": round(local, 1), "ray_steps_per_s": round(remote, 1),
                     "ray_vs_local": round(remote / local, 2)})
    return {"env": WORKLOADS["twx"], "steps": steps, "concurrent": concurrent, "cpus": os.cpu_count(),
            "cluster_cpus": ray.cluster_resources().get("CPU", 0), "cpus_per_worker": cpus_per_worker,
            "ray_version": ray.__version__, "ray_start_s": round(ray_start, 1), "rows": rows,
            "load_avg": [round(load, 1), round(os.getloadavg()[0], 1)]}


def print_results(results: dict, as_json: bool, console: Console) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"env steps/s, {results['env']}, {results['concurrent']} episodes per batch "
                        f"(higher is better; ray {results['ray_version']})")
    for col in ("workers", "local pool", "ray pool", "ray / local"):
        table.add_column(col)
    for r in results["rows"]:
        table.add_row(str(r["workers"]), f"{r['local_steps_per_s']:.0f}", f"{r['ray_steps_per_s']:.0f}",
                      f"{r['ray_vs_local']:.2f}x")
    console.print(table)
    console.print(f"Ray start (not timed above): {results['ray_start_s']:.1f}s · {results['cpus']} cores · "
                  f"load average {results['load_avg'][0]} before, {results['load_avg'][1]} after")
