"""What the benchmark runners share: the atomic results file, and runs in fresh processes that die with
the benchmark."""

import json
import signal
import subprocess
import sys
import time

import psutil

from stratarl.bench.common import in_fresh_process, save_results

PARENT = """
import time
from stratarl.bench.common import in_fresh_process
in_fresh_process(time.sleep, 120)
"""


def test_results_file_is_replaced_whole(tmp_path):
    path = save_results(tmp_path / "out", {"a": 1})
    save_results(tmp_path / "out", {"a": 2, "b": [1.5]})
    assert json.loads(path.read_text()) == {"a": 2, "b": [1.5]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_the_run_returns_its_result_from_another_process():
    import os

    assert in_fresh_process(os.getpid) != os.getpid()


def test_a_killed_benchmark_leaves_no_run_going():
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        deadline = time.time() + 60
        while not (kids := psutil.Process(parent.pid).children(recursive=True)) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # the child has run its initializer and is sleeping in the task
        kids = [k for k in psutil.Process(parent.pid).children(recursive=True) if "spawn_main" in " ".join(k.cmdline())]
        assert kids, "no spawned run"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        gone, alive = psutil.wait_procs(kids, timeout=15)
        assert not alive, f"runs still going after the benchmark was killed: {[p.pid for p in alive]}"
    finally:
        parent.kill()
