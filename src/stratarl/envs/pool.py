"""`EnvPool`: environment episodes spread over reusable worker processes.

The JVM environments live in workers. A worker hosts many episodes (each an env instance on the
worker's one JVM per family) and keeps finished instances for reuse. Calls are batched: `step`
sends every worker its share of the actions at once, and the workers run in parallel.

Failure handling, so that nothing is lost:
- a step that raises inside the env ends that episode with `error_kind="env_error"` and the text;
- a worker whose JVM or process died is restarted; its in-flight episodes get `env_error`, and its
  other open episodes are reported lost (`env_error`) the next time they are stepped;
- a step that takes longer than `step_timeout` seconds kills the worker's whole process group
  (the worker and its JVMs), restarts it, and ends that episode with `error_kind="timeout"`.
Workers run in their own session, so `close()` (or a kill) takes their `java` processes with them.

With `num_workers=0` the episodes run in this process (no timeouts; for debugging and benchmarks).
`num_workers=None` picks one worker per two cores: each episode step is a round trip between a
worker and its JVM, so on a 2-core machine a second worker only adds contention (see
`stratarl bench envs`).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..types import Task


@dataclass
class EnvReply:
    """The outcome of one reset or step of one episode."""

    episode: int
    """Episode id given by the pool at reset."""
    observation: str = ""
    """The env's observation (empty on error)."""
    reward: float = 0.0
    """Env reward of this step."""
    done: bool = False
    """The env ended the episode (always True on error)."""
    info: dict[str, Any] = field(default_factory=dict)
    """The env's info dict (won, score, outcome, admissible_actions, ...)."""
    error: str | None = None
    """What went wrong, when something did."""
    error_kind: str | None = None
    """`env_error` (the env or its worker failed) or `timeout` (a step hung)."""
    fatal: bool = False
    """Internal: the worker's JVM died and the worker must be restarted."""


def default_workers() -> int:
    """One env worker per two cores (at least one)."""
    return max(1, (os.cpu_count() or 2) // 2)


class _Host:
    """The episodes of one worker (or of this process when inline)."""

    def __init__(self) -> None:
        self.envs: dict[int, tuple[str, Any]] = {}
        self.idle: dict[str, list[Any]] = {}

    def reset(self, episode: int, task: Task) -> EnvReply:
        from .registry import make_env

        key = _env_key(task)
        env = self.idle.get(key, []).pop() if self.idle.get(key) else make_env(task)
        self.envs[episode] = (key, env)
        obs, info = env.reset(task)
        return EnvReply(episode, obs, 0.0, False, info)

    def step(self, episode: int, action: str) -> EnvReply:
        if episode not in self.envs:
            return _error(episode, "env_error", f"episode {episode} is not open on this worker")
        obs, reward, done, info = self.envs[episode][1].step(action)
        return EnvReply(episode, obs, float(reward), bool(done), info)

    def release(self, episode: int, reuse: bool = True) -> None:
        key, env = self.envs.pop(episode, (None, None))
        if env is not None and reuse:
            self.idle.setdefault(key, []).append(env)

    def expert(self, task: Task) -> list[str] | None:
        from .registry import make_env

        key = _env_key(task)
        env = self.idle.get(key, [None])[-1] if self.idle.get(key) else None
        if env is None:
            env = make_env(task)
            self.idle.setdefault(key, []).append(env)
        return env.expert_actions(task)

    def call(self, op: str, episode: int, arg: Any) -> EnvReply:
        """Run one op; an exception becomes an error reply (and the env is not reused)."""
        try:
            if op == "reset":
                return self.reset(episode, arg)
            if op == "step":
                return self.step(episode, arg)
            if op == "expert":
                return EnvReply(episode, info={"expert": self.expert(arg)})
            raise ValueError(f"unknown op {op}")
        except Exception as e:  # noqa: BLE001 - reported to the caller, episode recorded
            self.release(episode, reuse=False)
            return _error(episode, "env_error", _describe(e), fatal=_jvm_dead(e))


def _env_key(task: Task) -> str:
    return task.env + "?" + "&".join(f"{k}={v}" for k, v in sorted(task.params.items()))


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) < 2000 else text[:2000] + " ..."


def _jvm_dead(e: BaseException) -> bool:
    from .jvm import _JVMS

    name = type(e).__name__
    return name in ("Py4JNetworkError", "Py4JError") or any(not j.alive() for j in _JVMS.values())


def _error(episode: int, kind: str, text: str, fatal: bool = False) -> EnvReply:
    return EnvReply(episode, "", 0.0, True, {}, error=text, error_kind=kind, fatal=fatal)


def _worker_main(conn: Connection) -> None:
    """Worker loop: one message in (a batch), one reply out per item, in order."""
    os.setsid()  # our JVMs join this process group; the pool kills the group on a hang
    host = _Host()
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the pool is gone
            op, items = msg
            if op == "close":
                return
            if op == "release":
                for episode in items:
                    host.release(episode)
                continue
            for episode, arg in items:
                conn.send(host.call(op, episode, arg))
    finally:
        from .jvm import shutdown_all

        shutdown_all()


class _Worker:
    def __init__(self, ctx: Any, index: int):
        self.index = index
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name=f"stratarl-env-{index}")
        self.proc.start()
        child.close()
        self.episodes: set[int] = set()

    def kill(self) -> None:
        if self.proc.is_alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()


class EnvPool:
    """Episodes over worker processes (see module docstring)."""

    def __init__(self, num_workers: int | None = None, step_timeout: float = 60.0, start_timeout: float = 180.0):
        if num_workers is None:
            num_workers = default_workers()
        self.num_workers = num_workers
        self.step_timeout = step_timeout
        self.start_timeout = start_timeout
        self._ids = itertools.count()
        self._where: dict[int, int] = {}  # episode -> worker index
        self._lost: dict[int, str] = {}  # episode -> why it was lost with its worker
        self.restarts = 0
        self._ctx = mp.get_context("spawn")
        self._workers = [_Worker(self._ctx, i) for i in range(num_workers)]
        self._inline = _Host() if num_workers == 0 else None

    # -- public API -----------------------------------------------------------------------------

    def reset(self, tasks: Sequence[Task]) -> list[EnvReply]:
        """Open one episode per task; `reply.episode` is the id to step it with."""
        return self._run("reset", open_episodes(tasks, self._ids, self._assign), first_call=True)

    def step(self, actions: Sequence[tuple[int, str]]) -> list[EnvReply]:
        """Step episodes `(episode, action)`; replies come back in the same order."""
        return step_episodes(actions, self._lost, lambda ready: self._run("step", ready))

    def release(self, episodes: Iterable[int]) -> None:
        """Finish episodes; their env instances are kept for reuse."""
        for w, eps in by_worker(episodes, self._where, self._lost).items():
            if self._inline is not None:
                for e in eps:
                    self._inline.release(e)
                continue
            worker = self._workers[w]
            worker.episodes.difference_update(eps)
            try:
                worker.conn.send(("release", eps))
            except OSError:
                pass

    def expert_actions(self, task: Task) -> list[str] | None:
        episode = next(self._ids)
        w = self._assign(episode)
        reply = self._run("expert", [(episode, task)], first_call=True)[0]
        self._where.pop(episode, None)
        if self._workers:
            self._workers[w].episodes.discard(episode)
        if reply.error:
            raise RuntimeError(f"expert actions for {task.uid} failed: {reply.error}")
        return reply.info["expert"]

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc.is_alive()]

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(("close", None))
            except OSError:
                pass
        deadline = time.monotonic() + 15
        for w in self._workers:
            w.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            w.kill()  # also reaps any JVM left in the worker's process group
        self._workers = []
        if self._inline is not None:
            for e in list(self._inline.envs):
                self._inline.release(e, reuse=False)
            from .jvm import shutdown_all

            shutdown_all()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_workers", None):
            for w in self._workers:
                w.kill()

    # -- internals ------------------------------------------------------------------------------

    def _assign(self, episode: int) -> int:
        """Put a new episode on the worker hosting the fewest."""
        w = min(self._workers, key=lambda w: len(w.episodes)).index if self._workers else 0
        self._where[episode] = w
        if self._workers:
            self._workers[w].episodes.add(episode)
        return w

    def _run(self, op: str, items: list[tuple[int, Any]], first_call: bool = False) -> list[EnvReply]:
        if self._inline is not None:
            return [self._inline.call(op, e, a) for e, a in items]
        batches: dict[int, list[tuple[int, Any]]] = {}
        for episode, arg in items:
            batches.setdefault(self._where[episode], []).append((episode, arg))
        replies: dict[int, EnvReply] = {}
        pending: dict[int, list[int]] = {}
        for w, batch in batches.items():
            worker = self._workers[w]
            worker.episodes.update(e for e, _ in batch)
            pending[w] = [e for e, _ in batch]
            try:
                worker.conn.send((op, batch))
            except OSError as e:
                self._fail_worker(w, pending.pop(w), replies, "env_error", f"worker {w} unreachable: {e}")
        self._collect(pending, replies, first_call)
        return [replies[e] for e, _ in items]

    def _collect(self, pending: dict[int, list[int]], replies: dict[int, EnvReply], first_call: bool) -> None:
        """Gather one reply per item; a silent worker past its deadline is killed."""
        limit = self.step_timeout + (self.start_timeout if first_call else 0.0)
        deadline = {w: time.monotonic() + limit for w in pending}
        while pending:
            conns = {self._workers[w].conn: w for w in pending}
            timeout = max(0.0, min(deadline[w] for w in pending) - time.monotonic())
            for conn in wait(list(conns), timeout=timeout):
                w = conns[conn]
                try:
                    reply: EnvReply = conn.recv()
                except (EOFError, OSError):
                    self._fail_worker(w, pending.pop(w), replies, "env_error",
                                      f"env worker {w} died (exit code {self._workers[w].proc.exitcode})")
                    continue
                replies[reply.episode] = reply
                pending[w].remove(reply.episode)
                deadline[w] = time.monotonic() + self.step_timeout
                if reply.fatal:
                    self._fail_worker(w, pending.pop(w), replies, "env_error",
                                      f"worker {w} restarted after: {reply.error}")
                elif not pending[w]:
                    del pending[w]
            now = time.monotonic()
            for w in [w for w in pending if now >= deadline[w]]:
                eps = pending.pop(w)
                replies[eps[0]] = _error(eps[0], "timeout", f"no reply from the env in {self.step_timeout:g}s")
                self._fail_worker(w, eps[1:], replies, "env_error",
                                  f"worker {w} restarted after a timeout of episode {eps[0]}")

    def _fail_worker(self, w: int, in_flight: list[int], replies: dict[int, EnvReply], kind: str,
                     why: str) -> None:
        """Kill and replace worker `w`; in-flight episodes get an error, idle ones are marked lost."""
        old = self._workers[w]
        for episode in in_flight:
            replies.setdefault(episode, _error(episode, kind, why))
        for episode in old.episodes - set(in_flight):
            if episode in self._where and episode not in self._lost:
                self._lost[episode] = why
        old.kill()
        self._workers[w] = _Worker(self._ctx, w)
        self.restarts += 1


def split_lost(actions: Sequence[tuple[int, str]], lost: dict[int, str]) -> tuple[list[tuple[int, str]], dict[int, EnvReply]]:
    """Actions of live episodes, and `env_error` replies for episodes whose worker died (taken out of `lost`)."""
    ready, replies = [], {}
    for episode, action in actions:
        if episode in lost:
            replies[episode] = _error(episode, "env_error", lost.pop(episode))
        else:
            ready.append((episode, action))
    return ready, replies


def by_worker(episodes: Iterable[int], where: dict[int, int], lost: dict[int, str]) -> dict[int, list[int]]:
    """Finished episodes grouped by the worker holding them (forgotten by `where` and `lost`)."""
    out: dict[int, list[int]] = {}
    for episode in episodes:
        lost.pop(episode, None)
        w = where.pop(episode, None)
        if w is not None:
            out.setdefault(w, []).append(episode)
    return out


def open_episodes(tasks: Sequence[Task], ids: Iterator[int], assign: Callable[[int], None]) -> list[tuple[int, Task]]:
    """A fresh episode id per task, each placed on a worker by `assign`."""
    items = []
    for task in tasks:
        episode = next(ids)
        assign(episode)
        items.append((episode, task))
    return items


def step_episodes(actions: Sequence[tuple[int, str]], lost: dict[int, str],
                  run: Callable[[list[tuple[int, str]]], list[EnvReply]]) -> list[EnvReply]:
    """Step the live episodes through `run`; lost ones get their `env_error`; replies in `actions` order."""
    ready, replies = split_lost(actions, lost)
    replies.update({r.episode: r for r in run(ready)})
    return [replies[e] for e, _ in actions]
