"""`executor: ray`: env workers (and optionally the rollout engine) as Ray actors.

`RayEnvPool` speaks the `EnvPool` protocol — `reset`, `step`, `release`, `expert_actions`, `close`,
replies as `EnvReply` with `error`/`error_kind` — so the runner, the group sampler and the evaluator
use it unchanged. Each worker is a Ray actor hosting many episodes (a `_Host`, exactly what a local
worker process runs: one JVM per env family, finished env instances kept for reuse). Ray places the
actors by resources: each one reserves `cpus_per_worker` CPUs on some node of the cluster.

Failure handling mirrors the local pool, with Ray's own failure signal:
- a step that raises inside the env ends that episode with `env_error` (inside the actor, as locally);
- an actor that died (killed, crashed, its node lost) surfaces as `RayActorError` from `ray.get`: it is
  replaced by a fresh actor, its in-flight episodes get `env_error`, its other open episodes are
  reported lost (`env_error`) the next time they are stepped;
- a JVM that died inside a live actor: the actor is replaced as well (the rest of its batch fails);
- each worker gets one call per batch, so a hang is detected per batch: a call that takes longer than
  `step_timeout` per item (plus `start_timeout` on a first call) gets its actor killed and replaced,
  and every episode of that batch ends with `timeout` (which item hung is not known from outside).
Killing an actor ends its JVMs too: py4j starts them with `die_on_exit`, so they exit when the
actor's process (their stdin) goes away.

`RayEngine` runs an `HFEngine` in an actor and answers `generate` through `ray.get`. Ray gives the actor
as many threads as CPUs it reserves (`OMP_NUM_THREADS`); CPU kernels may round differently with
another thread count, so its samples equal an in-process engine's bit for bit at the same count.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..types import Task
from .pool import EnvReply, _error, _Host, by_worker, open_episodes, step_episodes

if TYPE_CHECKING:  # importing `engines` loads torch, which env actors do not need
    from ..engines.base import Completion, SamplingParams
    from ..engines.hf import HFEngineConfig


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs the ray package: pip install 'stratarl[ray]'") from None
    return ray


def connect(address: str = "") -> None:
    """Join the Ray cluster at `address` (`auto`: the one `ray start --head` runs on this machine,
    `ray://host:10001`: a remote one), or start a local Ray instance when it is ''. No-op when this
    process is already connected."""
    ray = _ray()
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(include_dashboard=False)


class EnvActor:
    """The body of one env actor: the episodes of one worker, as a local worker process holds them."""

    def __init__(self) -> None:
        self.host = _Host()

    def ready(self) -> int:
        return os.getpid()

    def java_pids(self) -> list[int]:
        """The live JVMs this actor's envs talk to (for tests that hang or kill one)."""
        from .jvm import java_pids

        return java_pids()

    def call(self, op: str, items: list[tuple[int, Any]]) -> list[EnvReply]:
        """Run a batch in order; stop after a reply whose JVM died (the pool replaces this actor)."""
        out = []
        for episode, arg in items:
            out.append(self.host.call(op, episode, arg))
            if out[-1].fatal:
                break
        return out

    def release(self, episodes: list[int]) -> None:
        for episode in episodes:
            self.host.release(episode)

    def close(self) -> None:
        from .jvm import shutdown_all

        shutdown_all()


@dataclass
class _Worker:
    """One env actor of the pool."""

    index: int
    """Slot of this worker in the pool."""
    actor: Any
    """The Ray actor handle."""
    episodes: set[int] = field(default_factory=set)
    """Episodes open on it."""


@dataclass
class _Call:
    """One batch in flight on one actor."""

    worker: int
    """Worker the batch went to."""
    episodes: list[int]
    """Its episodes, in order."""
    deadline: float
    """time.monotonic() past which the actor is deemed hung."""


class RayEnvPool:
    """Episodes over Ray actors (see module docstring); same interface as `EnvPool`."""

    def __init__(self, num_workers: int = 2, cpus_per_worker: float = 1.0, step_timeout: float = 60.0,
                 start_timeout: float = 180.0):
        if num_workers < 1:
            raise UserError(f"the Ray executor needs at least one env worker, got num_env_workers={num_workers}")
        ray = _ray()
        self.num_workers = num_workers
        self.cpus_per_worker = cpus_per_worker
        self.step_timeout = step_timeout
        self.start_timeout = start_timeout
        self._ids = itertools.count()
        self._where: dict[int, int] = {}  # episode -> worker index
        self._lost: dict[int, str] = {}  # episode -> why it was lost with its worker
        self.restarts = 0
        self._cls = ray.remote(EnvActor)
        self._workers = [self._spawn(i) for i in range(num_workers)]
        self._wait_placed()

    # -- public API (that of EnvPool) -----------------------------------------------------------------

    def reset(self, tasks: Sequence[Task]) -> list[EnvReply]:
        """Open one episode per task; `reply.episode` is the id to step it with."""
        return self._run("reset", open_episodes(tasks, self._ids, self._assign), first_call=True)

    def step(self, actions: Sequence[tuple[int, str]]) -> list[EnvReply]:
        """Step episodes `(episode, action)`; replies come back in the same order."""
        return step_episodes(actions, self._lost, lambda ready: self._run("step", ready))

    def release(self, episodes: Iterable[int]) -> None:
        """Finish episodes; their env instances are kept for reuse (the call is not waited for)."""
        for w, eps in by_worker(episodes, self._where, self._lost).items():
            worker = self._workers[w]
            worker.episodes.difference_update(eps)
            worker.actor.release.remote(eps)  # actor calls run in order: a later reset sees it done

    def expert_actions(self, task: Task) -> list[str] | None:
        episode = next(self._ids)
        w = self._assign(episode)
        reply = self._run("expert", [(episode, task)], first_call=True)[0]
        self._where.pop(episode, None)
        self._workers[w].episodes.discard(episode)
        if reply.error:
            raise RuntimeError(f"expert actions for {task.uid} failed: {reply.error}")
        return reply.info["expert"]

    def actors(self) -> list[Any]:
        """The live actor handles, worker by worker."""
        return [w.actor for w in self._workers]

    def close(self) -> None:
        ray = _ray()
        actors = self.actors()
        try:
            ray.get([a.close.remote() for a in actors], timeout=15)
        except ray.exceptions.RayError:
            pass  # dead or hung: the kill below ends it and, with it, its JVMs
        for a in actors:
            ray.kill(a, no_restart=True)
        self._workers = []

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        return _Worker(index, self._cls.options(num_cpus=self.cpus_per_worker, max_restarts=0).remote())

    def _wait_placed(self) -> None:
        """Wait until every actor runs; a cluster without room for them is a user error, said plainly."""
        ray = _ray()
        try:
            ray.get([w.actor.ready.remote() for w in self._workers], timeout=self.start_timeout)
        except ray.exceptions.GetTimeoutError:
            have = ray.cluster_resources().get("CPU", 0)
            for w in self._workers:  # some never started: no graceful close to wait for
                ray.kill(w.actor, no_restart=True)
            self._workers = []
            raise UserError(
                f"Ray could not start {self.num_workers} env actors of {self.cpus_per_worker:g} CPUs each in "
                f"{self.start_timeout:g}s (the cluster has {have:g} CPUs): lower ray.num_env_workers or "
                "ray.cpus_per_worker, or add nodes") from None

    def _assign(self, episode: int) -> int:
        """Put a new episode on the worker hosting the fewest."""
        w = min(self._workers, key=lambda w: len(w.episodes)).index
        self._where[episode] = w
        self._workers[w].episodes.add(episode)
        return w

    def _run(self, op: str, items: list[tuple[int, Any]], first_call: bool = False) -> list[EnvReply]:
        """One actor call per worker with its share of `items`; replies in the order of `items`."""
        batches: dict[int, list[tuple[int, Any]]] = {}
        for episode, arg in items:
            batches.setdefault(self._where[episode], []).append((episode, arg))
        start = self.start_timeout if first_call else 0.0
        calls: dict[Any, _Call] = {}
        for w, batch in batches.items():
            worker = self._workers[w]
            worker.episodes.update(e for e, _ in batch)
            deadline = time.monotonic() + start + self.step_timeout * len(batch)
            calls[worker.actor.call.remote(op, batch)] = _Call(w, [e for e, _ in batch], deadline)
        replies: dict[int, EnvReply] = {}
        self._collect(calls, replies)
        return [replies[e] for e, _ in items]

    def _collect(self, calls: dict[Any, _Call], replies: dict[int, EnvReply]) -> None:
        """Gather every call's replies; a dead actor (`RayActorError`) or one past its deadline is replaced."""
        ray = _ray()
        while calls:
            timeout = max(0.0, min(c.deadline for c in calls.values()) - time.monotonic())
            ready, _ = ray.wait(list(calls), num_returns=1, timeout=timeout)
            for ref in ready:
                call = calls.pop(ref)
                try:
                    out: list[EnvReply] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    self._fail_worker(call.worker, call.episodes, replies, "env_error",
                                      f"env actor {call.worker} died: {_first_line(e)}")
                    continue
                replies.update((r.episode, r) for r in out)
                if out and out[-1].fatal:
                    self._fail_worker(call.worker, call.episodes[len(out):], replies, "env_error",
                                      f"env actor {call.worker} restarted after: {out[-1].error}")
            now = time.monotonic()
            for ref in [r for r, c in calls.items() if now >= c.deadline]:
                call = calls.pop(ref)
                self._fail_worker(call.worker, call.episodes, replies, "timeout",
                                  f"no reply from the env in {self.step_timeout:g}s per step "
                                  f"(env actor {call.worker}, {len(call.episodes)} in its batch)")

    def _fail_worker(self, w: int, in_flight: list[int], replies: dict[int, EnvReply], kind: str,
                     why: str) -> None:
        """Kill and replace worker `w`; in-flight episodes get an error, idle ones are marked lost."""
        old = self._workers[w]
        for episode in in_flight:
            replies.setdefault(episode, _error(episode, kind, why))
        for episode in old.episodes - set(in_flight):
            if episode in self._where and episode not in self._lost:
                self._lost[episode] = why
        _ray().kill(old.actor, no_restart=True)
        self._workers[w] = self._spawn(w)
        self.restarts += 1


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


class RayEngine:
    """An `Engine` whose `HFEngine` runs in a Ray actor (`ray.engine_actor`); calls block on `ray.get`."""

    def __init__(self, model_path: str | Path, cfg: HFEngineConfig | None = None, num_cpus: float = 1.0):
        from ..engines.hf import HFEngine

        ray = _ray()
        self._actor = ray.remote(HFEngine).options(num_cpus=num_cpus, max_restarts=0).remote(str(model_path), cfg)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        return _ray().get(self._actor.generate.remote(prompts, params))

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
        _ray().get(self._actor.update_weights.remote(cpu))

    def clear_cache(self) -> None:
        _ray().get(self._actor.clear_cache.remote())

    def close(self) -> None:
        ray = _ray()
        try:
            ray.get(self._actor.close.remote(), timeout=15)
        except ray.exceptions.RayError:
            pass
        ray.kill(self._actor, no_restart=True)
