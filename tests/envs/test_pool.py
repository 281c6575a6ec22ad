"""EnvPool: parallel workers give the same results as direct envs; a killed JVM or a hung step is
recovered by restarting the worker and recording the episode as an error; no java is orphaned."""

import contextlib
import os
import signal
import time

import psutil
import pytest

from stratarl.envs import make_env, make_tasks
from stratarl.envs.pool import EnvPool


def _java_descendants(pool):
    out = []
    for pid in pool.worker_pids():
        try:
            out += [c for c in psutil.Process(pid).children(recursive=True) if "java" in c.name()]
        except psutil.NoSuchProcess:
            pass
    return out


def _alive(procs):
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _gone(procs, within=10.0):
    """True once none of `procs` is alive (a SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + within
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(procs)


@pytest.fixture(scope="module")
def pool():
    with EnvPool(num_workers=2, step_timeout=20) as p:
        yield p


def test_pool_matches_direct_env(pool):
    tasks = make_tasks("twx:cookingworld", "train", n=4) + make_tasks("sciworld:boil", "train", n=2)
    direct = make_env(tasks[0])
    plans = [direct.expert_actions(t) if t.env.startswith("twx") else ["look around", "open door to kitchen",
                                                                        "go to kitchen"] for t in tasks[:4]]
    plans += [make_env(tasks[4]).expert_actions(t)[:5] for t in tasks[4:]]
    replies = pool.reset(tasks)
    eps = [r.episode for r in replies]
    assert len({pool._where[e] for e in eps}) == 2  # spread over both workers
    for k in range(3):
        got = pool.step([(e, plan[k]) for e, plan in zip(eps, plans, strict=True)])
        for t, plan, r in zip(tasks, plans, got, strict=True):
            env = make_env(t)
            env.reset(t)
            for a in plan[:k]:
                env.step(a)
            obs, reward, done, info = env.step(plan[k])
            assert (r.observation, r.reward, r.done, r.error) == (obs, reward, done, None)
    pool.release(eps)


def test_killed_jvm_restarts_worker_and_records_env_error(pool):
    tasks = make_tasks("twx:coin", "train", n=4)
    eps = [r.episode for r in pool.reset(tasks)]
    victim_worker = pool._where[eps[0]]
    wpid = pool._workers[victim_worker].proc.pid
    java = [c for c in psutil.Process(wpid).children(recursive=True) if "java" in c.name()]
    assert java, "the worker should host a JVM"
    restarts = pool.restarts
    java[0].kill()
    java[0].wait(5)
    replies = pool.step([(e, "look around") for e in eps])
    for e, r in zip(eps, replies, strict=True):
        if pool._where.get(e) == victim_worker or e == eps[0]:
            assert r.error_kind == "env_error" and r.done and r.error
        else:
            assert r.error is None
    assert replies[0].error and "Py4J" in replies[0].error
    assert pool.restarts == restarts + 1
    assert not psutil.pid_exists(wpid) or psutil.Process(wpid).status() == psutil.STATUS_ZOMBIE
    # The pool keeps working: new episodes run on the restarted worker.
    pool.release(eps)
    again = pool.reset(tasks)
    assert all(r.error is None and r.observation for r in again)
    pool.release(r.episode for r in again)


def _wait_all_threads_stopped(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP takes effect thread by thread as each is scheduled; under load a JVM thread could still
    answer a request sent right after kill(), so wait until every thread is in state T."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if states and all(s in "tT" for s in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"JVM {pid} did not stop")


def test_hung_step_times_out_and_restarts():
    with EnvPool(num_workers=1, step_timeout=2) as p:
        (r,) = p.reset(make_tasks("twx:coin", "train", n=1))
        (java,) = _java_descendants(p)
        os.kill(java.pid, signal.SIGSTOP)  # a real hang: the JVM stops answering
        _wait_all_threads_stopped(java.pid)
        t0 = time.monotonic()
        (out,) = p.step([(r.episode, "look around")])
        assert out.error_kind == "timeout" and out.done and "2s" in out.error
        assert time.monotonic() - t0 < 15
        assert _gone([java])  # the worker's process group was killed, JVM included
        (fresh,) = p.reset(make_tasks("twx:coin", "train", n=1))
        assert fresh.error is None


def test_close_leaves_no_java_processes():
    p = EnvPool(num_workers=2)
    p.reset(make_tasks("twx:coin", "train", n=2) + make_tasks("sciworld:melt", "train", n=2))
    javas = _java_descendants(p)
    workers = [psutil.Process(pid) for pid in p.worker_pids()]
    assert len(javas) >= 3  # twx + sciworld JVMs in one worker, at least one in the other
    p.close()
    assert _gone(javas + workers)


def test_inline_pool_runs_in_process():
    with EnvPool(num_workers=0) as p:
        (r,) = p.reset(make_tasks("twx:coin", "train", n=1))
        (s,) = p.step([(r.episode, "look around")])
        assert s.error is None and s.observation
