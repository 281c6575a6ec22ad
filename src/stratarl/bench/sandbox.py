"""`stratarl bench sandbox`: executions/s of a trivial program through the sandbox, against plain
`python -I -c` subprocesses measured in the same run, and a containment table of hostile programs.

The two loops are interleaved call by call, so drift on a shared machine hits both alike.
`ratio` = sandbox executions/s / baseline executions/s (1.0 = no overhead).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson
import psutil
from rich.console import Console
from rich.table import Table

from ..synth.sandbox import SandboxConfig, SandboxResult, isolation, run_code

SECRET_NAME, SECRET = "STRATARL_BENCH_SECRET", "s3cret-bench"
TRIVIAL = "print(1)"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _baseline_call() -> None:
    subprocess.run([sys.executable, "-I", "-c", TRIVIAL], capture_output=True, check=True)


def _sandbox_call() -> None:
    r = run_code(TRIVIAL)
    if r.status != "ok" or r.stdout != "1\n":
        raise RuntimeError(f"sandboxed print(1) failed: {r.status} {r.stderr[-300:]}")


def run_bench(n: int = 50) -> dict:
    """Executions/s of `print(1)`: plain subprocess vs run_code, `n` calls each, interleaved."""
    plan = isolation()  # probe outside the timed loop
    for _ in range(3):
        _baseline_call()
        _sandbox_call()
    base = sandbox = 0.0
    for _ in range(n):
        base += _timed(_baseline_call)
        sandbox += _timed(_sandbox_call)
    network, filesystem = plan.labels(SandboxConfig().python_guards)
    return {"n": n, "baseline_exec_per_s": round(n / base, 1), "sandbox_exec_per_s": round(n / sandbox, 1),
            "ratio": round(base / sandbox, 3), "overhead_ms": round(1000 * (sandbox - base) / n, 2),
            "network": network, "filesystem": filesystem, "private_uid": plan.drop_uid,
            "python": sys.executable}


# ---------------------------------------------------------------- containment


@dataclass
class _Context:
    """Host-side bait the hostile cases aim at."""

    port: int
    target: str
    holder_pid: int
    listener: socket.socket = field(repr=False)


@contextmanager
def _bait() -> Iterator[_Context]:
    """A listening socket, a world-writable directory outside the sandbox, a secret in this process's
    environment and a bystander process that holds the secret in its initial environment."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    outside = tempfile.mkdtemp(prefix="stratarl-bench-outside-")
    os.chmod(outside, 0o777)
    old = os.environ.get(SECRET_NAME)
    os.environ[SECRET_NAME] = SECRET
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=dict(os.environ))
    try:
        yield _Context(listener.getsockname()[1], os.path.join(outside, "pwned.txt"), holder.pid, listener)
    finally:
        holder.kill()
        holder.wait()
        listener.close()
        if old is None:
            os.environ.pop(SECRET_NAME, None)
        else:
            os.environ[SECRET_NAME] = old
        for name in os.listdir(outside):
            os.remove(os.path.join(outside, name))
        os.rmdir(outside)


def _listener_untouched(ctx: _Context) -> bool:
    try:
        conn, _ = ctx.listener.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def _no_leftovers() -> bool:
    for p in psutil.process_iter(["cmdline", "status"]):
        running = p.info["status"] != psutil.STATUS_ZOMBIE
        if running and "stratarl-sandbox-" in " ".join(p.info["cmdline"] or []):
            return False
    return True


def _holder_alive(ctx: _Context) -> bool:
    try:
        return psutil.Process(ctx.holder_pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass(frozen=True)
class _Case:
    name: str
    code: Callable[[_Context], str]
    contained: Callable[[SandboxResult, _Context], bool]
    cfg: SandboxConfig = SandboxConfig(cpu_seconds=2, wall_seconds=5)


_FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
"""
_ESCAPE = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        os.setsid()
        time.sleep(600)
"""
_FLOOD = """
import sys
chunk = "x" * (1 << 20)
for _ in range(1024):
    sys.stdout.write(chunk)
"""
_KERNEL_ONLY = SandboxConfig(cpu_seconds=2, wall_seconds=5, python_guards=False)


def _write(ctx: _Context) -> str:
    return f"open({ctx.target!r}, 'w').write('pwned')\n"


def _connect(ctx: _Context) -> str:
    return f"import socket\nsocket.create_connection(('127.0.0.1', {ctx.port}), timeout=2).sendall(b'hi')\n"


CASES = (
    _Case("infinite_loop", lambda c: "while True:\n    pass\n",
          lambda r, c: r.status in ("killed", "timeout")),
    _Case("sleep_forever", lambda c: "import time\ntime.sleep(600)\n", lambda r, c: r.status == "timeout",
          SandboxConfig(wall_seconds=1)),
    _Case("fork_bomb", lambda c: _FORK_BOMB, lambda r, c: r.status != "ok" and _no_leftovers(),
          SandboxConfig(cpu_seconds=2, wall_seconds=2)),
    _Case("setsid_escape", lambda c: _ESCAPE, lambda r, c: _no_leftovers()),
    _Case("memory_hog_2gb", lambda c: "x = bytearray(2 * 1024 ** 3)\nprint('allocated')\n",
          lambda r, c: "allocated" not in r.stdout),
    _Case("output_1gb", lambda c: _FLOOD,
          lambda r, c: r.status == "output_limit" and len(r.stdout) <= SandboxConfig().output_bytes),
    _Case("write_outside", _write, lambda r, c: not os.path.exists(c.target)),
    _Case("write_outside_kernel_only", _write, lambda r, c: not os.path.exists(c.target), _KERNEL_ONLY),
    _Case("socket_to_host", _connect, lambda r, c: _listener_untouched(c)),
    _Case("socket_to_host_kernel_only", _connect, lambda r, c: _listener_untouched(c), _KERNEL_ONLY),
    _Case("env_secret", lambda c: "import os\nprint(dict(os.environ))\n",
          lambda r, c: SECRET not in r.stdout),
    _Case("proc_environ_of_host", lambda c: f"print(open('/proc/{c.holder_pid}/environ').read())\n",
          lambda r, c: SECRET not in r.stdout, _KERNEL_ONLY),
    _Case("kill_host_process", lambda c: f"import os, signal\nos.kill({c.holder_pid}, signal.SIGKILL)\n",
          lambda r, c: _holder_alive(c), _KERNEL_ONLY),
)


def containment_table() -> list[dict]:
    """Run each hostile case; `contained` is checked on the host (file absent, listener idle, ...)."""
    rows = []
    with _bait() as ctx:
        for case in CASES:
            r = run_code(case.code(ctx), case.cfg)
            rows.append({"case": case.name, "status": r.status, "duration": round(r.duration, 3),
                         "contained": bool(case.contained(r, ctx)), "guards": case.cfg.python_guards,
                         "detail": r.detail})
    return rows


def print_results(results: dict, as_json: bool, console: Console) -> None:
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    b = results["bench"]
    table = Table(title=f"sandbox executions/s of print(1), n={b['n']} (higher is better)")
    for col in ("plain subprocess", "run_code", "ratio (run_code/plain)", "overhead/call", "network",
                "filesystem"):
        table.add_column(col)
    table.add_row(f"{b['baseline_exec_per_s']:.1f}", f"{b['sandbox_exec_per_s']:.1f}", f"{b['ratio']:.2f}x",
                  f"{b['overhead_ms']:.1f} ms", b["network"], b["filesystem"])
    console.print(table)
    cont = Table(title="containment of hostile programs")
    for col in ("case", "status", "duration s", "contained", "python guards", "detail"):
        cont.add_column(col)
    for row in results["containment"]:
        mark = "[green]yes[/green]" if row["contained"] else "[red]NO[/red]"
        guards = "on" if row["guards"] else "off"
        cont.add_row(row["case"], row["status"], f"{row['duration']:.2f}", mark, guards, row["detail"])
    console.print(cont)
