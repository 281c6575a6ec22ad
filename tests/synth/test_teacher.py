"""Both pipelines against a real teacher endpoint: `stratarl serve` over the tiny model, started as a
subprocess on a free loopback port. Its answers are garbage, so every stage must validate them, fall back
or reject, count it, and finish; an endpoint that does not answer at all is counted the same way."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stratarl.synth.pipeline import (
    SynthEnvironmentsConfig,
    SynthTrajectoriesConfig,
    run_environments,
    run_trajectories,
)
from stratarl.synth.servers import SEED_DIR
from stratarl.synth.teacher import TeacherConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def teacher_url(tiny_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stratarl", "serve", "tiny", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/models", timeout=1).read()
                break
            except OSError:
                assert proc.poll() is None, "stratarl serve exited"
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def two_records(tmp_path: Path) -> str:
    lines = (SEED_DIR / "decompositions.jsonl").read_text().splitlines()
    keep = [x for x in lines if json.loads(x)["id"] in ("qa-01", "qa-09")]  # 4 tool sub-questions
    (tmp_path / "qa.jsonl").write_text("\n".join(keep) + "\n")
    return str(tmp_path / "qa.jsonl")


def test_trajectories_with_the_tiny_teacher(tmp_path, teacher_url):
    teacher = TeacherConfig(base_url=teacher_url, model="tiny", max_tokens=24)
    cfg = SynthTrajectoriesConfig(name="t", out_dir=str(tmp_path), max_chains=1, judge="teacher", teacher=teacher)
    r = run_trajectories(cfg)
    t = r["teacher"]
    assert r["tasks"] == r["trajectories"] == 4  # one chain on each of the 4 servers
    assert t["task_requests"] == 4 and t.get("task_rejected", 0) + t.get("task_accepted", 0) == 4
    assert t["turn_requests"] >= 4 and t.get("judge_rejected", 0) + r["scored_by_judge"] == 4
    assert r["teacher_rejected"] + r["trajectories_from_teacher"] == 4
    assert r["fallbacks"] == r["teacher_rejected"] == sum(r["teacher_rejection_reasons"].values())
    assert r["teacher_rejected"] > 0  # the tiny model does not write valid tool calls
    assert (tmp_path / "t" / "sft.jsonl").is_file()


def test_environments_with_the_tiny_teacher(tmp_path, teacher_url):
    teacher = TeacherConfig(base_url=teacher_url, model="tiny", max_tokens=24, retries=1)
    cfg = SynthEnvironmentsConfig(name="e", out_dir=str(tmp_path), records=two_records(tmp_path), teacher=teacher)
    r = run_environments(cfg)
    t = r["teacher"]
    assert r["tool_specs"] == 4 and t["tool_requests"] == 4 * 2  # every sub-question: first try + 1 retry
    assert t.get("tool_rejected", 0) + t.get("tool_accepted", 0) == 8 and t["tool_rejected"] > 0
    # rejected teacher tools fall back to the template writer: qa-01's two verify, qa-09's Kelvin one does not
    assert r["from_teacher"] + r["from_template"] == r["verified"] == 3 and r["rejected"] == 1
    assert r["final_items"] == 1


def test_an_endpoint_that_does_not_answer_is_counted_not_fatal(tmp_path):
    dead = TeacherConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=2)
    cfg = SynthEnvironmentsConfig(name="d", out_dir=str(tmp_path), records=two_records(tmp_path), teacher=dead)
    r = run_environments(cfg)
    assert r["teacher"]["tool_errors"] == r["teacher"]["tool_requests"] == 4 * 3  # default retries 2
    assert r["verified"] == 3 and r["from_template"] == 3
