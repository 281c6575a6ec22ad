"""The Ray executor on a real local Ray cluster: env actors (and the engine as an actor) give the same
records as the local executor; a killed env actor is replaced, its episodes are recorded as
`env_error`, its JVM goes with it, and later episodes are fine."""

import contextlib
import time

import psutil
import pytest
import torch

ray = pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'stratarl[ray]'")

from stratarl.config import to_dict  # noqa: E402
from stratarl.engines.base import SamplingParams  # noqa: E402
from stratarl.engines.hf import HFEngine, HFEngineConfig  # noqa: E402
from stratarl.envs import make_tasks  # noqa: E402
from stratarl.envs.pool import EnvPool  # noqa: E402
from stratarl.envs.ray_pool import RayEngine, RayEnvPool  # noqa: E402
from stratarl.errors import UnknownNameError, UserError  # noqa: E402
from stratarl.evaluate import EvalConfig, run_reference_agent  # noqa: E402
from stratarl.rollout.groups import GroupConfig, sample_groups  # noqa: E402
from stratarl.rollout.runner import RunnerConfig, StepSampling  # noqa: E402

ENV = "twx:cookingworld?numLocations=1&numIngredients=1&numDistractorItems=0"


@pytest.fixture(scope="module")
def cluster():
    # The test machine is shared: Ray's memory monitor would kill our actors for other jobs' memory, and
    # Ray's default worker niceness (+15) would starve them behind those jobs (local workers get +0).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_memory_monitor_refresh_ms", "0")
        mp.setenv("RAY_worker_niceness", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_pool(cluster):
    # half a CPU each: the two env actors and the engine actor fit the 2-CPU cluster together
    with RayEnvPool(num_workers=2, cpus_per_worker=0.5, step_timeout=60) as p:
        yield p


@pytest.fixture(scope="module")
def local_pool():
    with EnvPool(num_workers=1) as p:
        yield p


def _records(trajs):
    return [to_dict(t) for t in trajs]


def test_random_agent_same_records_through_ray_and_local(ray_pool, local_pool):
    tasks = make_tasks(ENV, "train", n=4)
    cfg = EvalConfig(env=ENV, agent="random", seed=3, max_steps=6)
    local = run_reference_agent(cfg, tasks, local_pool)
    remote = run_reference_agent(cfg, tasks, ray_pool)
    assert sum(len(t.steps) for t in local) >= 8 and all(t.termination != "env_error" for t in local)
    assert _records(remote) == _records(local)
    assert ray_pool.expert_actions(tasks[0]) == local_pool.expert_actions(tasks[0])


@pytest.fixture
def one_thread():
    """The engine actor holds 1 CPU, so Ray gives it 1 thread; CPU kernels can round differently with
    another thread count (seen here after the weight update), so the in-process engine uses 1 too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_model_rollouts_same_through_ray_executor(tiny_path, tiny_tokenizer, ray_pool, local_pool, one_thread):
    """The real tiny model: in-process engine + local pool vs engine actor + env actors, same seed."""
    tasks = make_tasks(ENV, "train", n=1)
    rcfg = RunnerConfig(max_steps=2, sampling=StepSampling(max_tokens=8, strategy_max_tokens=8))
    gcfg = GroupConfig(strategy=True, n_strategies=1, n_rollouts=2)
    local_engine = HFEngine(tiny_path, HFEngineConfig(), tiny_tokenizer)
    remote_engine = RayEngine(tiny_path, HFEngineConfig(), num_cpus=1)
    try:
        local = sample_groups(local_engine, tiny_tokenizer, local_pool, tasks, gcfg, rcfg, seed=5)
        remote = sample_groups(remote_engine, tiny_tokenizer, ray_pool, tasks, gcfg, rcfg, seed=5)
        assert [to_dict(g) for g in remote] == [to_dict(g) for g in local]
        # weight sync reaches the actor: both engines, given the same new weights, sample the same
        state = {k: v * 1.5 if "lm_head" in k or "embed" in k else v
                 for k, v in local_engine.model.state_dict().items()}
        for e in (local_engine, remote_engine):
            e.update_weights(state)
        params = SamplingParams(temperature=0.0, max_tokens=6)
        prompt = [local[0].flat[0].steps[0].prompt_ids]
        a, b = local_engine.generate(prompt, params), remote_engine.generate(prompt, params)
        assert (a[0].token_ids, a[0].logprobs) == (b[0].token_ids, b[0].logprobs)
    finally:
        remote_engine.close()


class KillBeforeStep:
    """The real Ray pool; right before its `at`-th step batch, env actor 0 is killed with `ray.kill`, and the
    batch is sent once its process is gone (`ray.kill` returns before the kill lands: a batch sent at once
    could still be served by the dying actor, and its episodes would fail one step later)."""

    def __init__(self, pool: RayEnvPool, at: int):
        self.pool, self.at, self.calls, self.victims = pool, at, 0, set()

    def step(self, actions):
        self.calls += 1
        if self.calls == self.at:
            self.victims = {e for e, _ in actions if self.pool._where[e] == 0}
            actor = self.pool.actors()[0]
            process = psutil.Process(ray.get(actor.ready.remote()))
            ray.kill(actor)
            assert _gone([process]), "env actor 0 outlived ray.kill by 15 s"
        return self.pool.step(actions)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(procs, within=15.0):
    """True once none of `procs` is alive (a kill is delivered asynchronously)."""
    deadline = time.monotonic() + within
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in procs)


def test_killed_actor_is_replaced_and_episode_recorded_as_env_error(ray_pool):
    tasks = make_tasks(ENV, "train", n=4)
    cfg = EvalConfig(env=ENV, agent="random", seed=3, max_steps=6)
    warm = ray_pool.reset(make_tasks(ENV, "train", n=2))  # one episode per actor: each hosts a JVM, whatever
    ray_pool.release(w.episode for w in warm)               # ran before (tests run in any order)
    actor_pid = ray.get(ray_pool.actors()[0].ready.remote())
    actor = psutil.Process(actor_pid)
    java = [c for c in actor.children(recursive=True) if "java" in c.name()]
    assert java, "env actor 0 should host a JVM once it has run an episode"
    restarts = ray_pool.restarts
    killer = KillBeforeStep(ray_pool, at=2)
    trajs = run_reference_agent(cfg, tasks, killer)
    assert killer.victims and ray_pool.restarts == restarts + 1
    for t, r in zip(trajs, run_reference_agent(cfg, tasks, ray_pool), strict=True):
        if t.steps and t.termination == "env_error":
            assert len(t.steps) == 1 and "env actor 0 died" in t.error and "ActorDiedError" in t.error
        else:
            assert to_dict(t) == to_dict(r)  # the other actor's episodes ran on, unaffected
        assert r.termination != "env_error"  # later episodes are fine, on the replacement actor too
    assert sum(t.termination == "env_error" for t in trajs) == len(killer.victims)
    assert _gone([actor, *java])  # the actor's JVM died with it (py4j's die_on_exit)
    assert ray.get(ray_pool.actors()[0].ready.remote()) != actor_pid


def test_hung_step_times_out_and_the_actor_is_replaced(ray_pool, monkeypatch):
    monkeypatch.setattr(ray_pool, "step_timeout", 2)
    (r,) = ray_pool.reset(make_tasks(ENV, "train", n=1))
    handle = ray_pool.actors()[ray_pool._where[r.episode]]
    actor = psutil.Process(ray.get(handle.ready.remote()))
    # the JVM the actor's envs talk to, as the actor knows it (not a guess from its process tree)
    (java,) = [psutil.Process(pid) for pid in ray.get(handle.java_pids.remote())]
    restarts = ray_pool.restarts
    java.suspend()  # a real hang: the JVM stops answering
    try:
        t0 = time.monotonic()
        (out,) = ray_pool.step([(r.episode, "look around")])
        assert out.error_kind == "timeout" and out.done and "2s" in out.error
        assert time.monotonic() - t0 < 30 and ray_pool.restarts == restarts + 1 and _gone([actor])
    finally:  # a stopped JVM cannot read the EOF that would end it; it may also have gone with its actor
        with contextlib.suppress(psutil.NoSuchProcess):
            java.kill()
    ray_pool.release([r.episode])
    fresh = ray_pool.reset(make_tasks(ENV, "train", n=2))  # one lands on the replacement actor
    assert all(f.error is None and f.observation for f in fresh)
    ray_pool.release(f.episode for f in fresh)


def test_cluster_without_room_is_a_user_error(cluster):
    with pytest.raises(UserError, match=r"could not start 5 env actors of 1 CPUs each in 3s \(the cluster has 2 CPUs"):
        RayEnvPool(num_workers=5, cpus_per_worker=1.0, start_timeout=3)


def test_executor_is_chosen_by_name(tmp_path):
    from stratarl.train.config import TrainConfig
    from stratarl.train.state import make_pool

    with pytest.raises(UnknownNameError, match="unknown executor 'rey'.*'ray'"):
        make_pool(TrainConfig(executor="rey"))  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="local, ray"):
        make_pool(TrainConfig(executor="slurm"))  # type: ignore[arg-type]
