"""Trajectories on disk round-trip into records and groups; the HTML viewer renders them, checked in
headless Chromium (skipped with a reason when no browser is installed; `make test-e2e` installs one)."""

import re
import shutil
import subprocess

import pytest

from stratarl.envs import make_tasks
from stratarl.envs.pool import EnvPool
from stratarl.evaluate import EvalConfig, run_reference_agent
from stratarl.rollout.horizon import Horizon, HorizonConfig
from stratarl.rollout.store import iteration_path, read_trajectories, regroup, write_trajectories
from stratarl.types import Group, Turn
from stratarl.view import build_viewer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with two iterations of real random-agent episodes (2 tasks x 2 'strategies' x 2)."""
    root = tmp_path_factory.mktemp("run")
    tasks = make_tasks("twx:coin", "train", n=2)
    with EnvPool(num_workers=1) as pool:
        for it in (0, 1):
            trajs = run_reference_agent(EvalConfig(agent="random", max_steps=6, seed=it), tasks * 4, pool)
            for n, t in enumerate(trajs):
                i = (n // 2) % 2
                t.strategy = Turn(prompt_ids=[1], response_ids=[2], logprobs=[-1.0], text=f"<strategy>plan {i}</strategy>")
                t.strategy_uid, t.uid = f"{t.task_uid}/s{i}", f"{t.task_uid}/{n}"
                for k, s in enumerate(t.steps):
                    s.advantage = (-1) ** k * 0.5
            trajs.sort(key=lambda t: (t.task_uid, t.strategy_uid))
            write_trajectories(iteration_path(root, it), trajs)
    return root


def test_jsonl_round_trip_and_regroup(run_dir):
    trajs = read_trajectories(iteration_path(run_dir, 0))
    assert len(trajs) == 8
    groups = regroup(trajs)
    assert len(groups) == 2 and all(isinstance(g, Group) for g in groups)
    assert [len(ts) for ts in groups[0].trajectories] == [2, 2]
    assert [s.text for s in groups[0].strategies] == ["<strategy>plan 0</strategy>", "<strategy>plan 1</strategy>"]
    assert [t for g in groups for t in g.flat] == trajs


def test_viewer_is_self_contained(run_dir):
    page = build_viewer(run_dir).read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert '"iterations"' in page and "plan 1" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed (`make test` installs it with apt-get)")
def test_viewer_renders_in_headless_chromium(run_dir, tmp_path):
    page = build_viewer(run_dir)
    traj = regroup(read_trajectories(iteration_path(run_dir, 1)))[1].trajectories[1][0]
    r = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
         f"file://{page}#1/1/1/0"], capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert len(re.findall(r'data-step="\d+"', dom)) == len(traj.steps) > 0
    assert all(s.action in dom for s in traj.steps)
    assert "plan 1" in dom
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console


def test_horizon_schedules():
    assert Horizon(HorizonConfig(kind="fixed", max_steps=7)).at(100) == 7
    step = Horizon(HorizonConfig(kind="stepwise", stages=[10, 20, 30], every=5))
    assert [step.at(i) for i in (0, 4, 5, 9, 10, 99)] == [10, 10, 20, 20, 30, 30]
    ada = Horizon(HorizonConfig(kind="adaptive", stages=[5, 10], threshold=0.5))
    ada.observe(0.4)
    assert ada.at(0) == 5
    ada.observe(0.6)
    assert ada.at(1) == 10
    ada.observe(0.9)
    assert ada.at(2) == 10
