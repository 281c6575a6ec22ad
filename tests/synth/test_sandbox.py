"""The sandbox against hostile code: every test asserts the containment itself (the file is absent, the
listener saw nothing, no process is left, the output is bounded), not merely that nothing crashed."""

import os
import socket
import subprocess
import sys
import time
from textwrap import dedent

import psutil
import pytest

from stratarl.synth.sandbox import STATUSES, SandboxConfig, isolation, run_code

FAST = SandboxConfig(cpu_seconds=1, wall_seconds=5)


def _leftovers() -> list[psutil.Process]:
    """Live processes still running sandboxed code (their command line names the per-run directory)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):  # unreadable fields come back as None
        cmd = " ".join(p.info["cmdline"] or [])
        if "stratarl-sandbox-" in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def _live_children() -> list[psutil.Process]:
    return [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(autouse=True)
def _no_leftovers():
    before = {c.pid for c in _live_children()}  # e.g. JVMs and pool helpers left by earlier test modules
    yield
    assert not _leftovers(), "sandboxed processes survived the run"
    assert not [c for c in _live_children() if c.pid not in before], "child processes of the test survived it"


def test_trivial_ok():
    r = run_code("print(1 + 1)")
    assert (r.status, r.stdout, r.returncode, r.truncated) == ("ok", "2\n", 0, False)
    assert r.duration > 0
    keys = {"status", "stdout", "stderr", "duration", "returncode", "network", "truncated"}
    assert keys <= set(r.to_dict())
    assert r.status in STATUSES and r.network in ("namespace", "socket-block")


def test_syntax_error_reports_traceback():
    r = run_code("def f(:\n    pass\n")
    assert r.status == "error" and r.returncode == 1
    assert "SyntaxError" in r.stderr and "main.py" in r.stderr and "line 1" in r.stderr
    assert "_guard" not in r.stderr  # the prelude's own frames are trimmed


def test_runtime_error_traceback_names_user_code():
    r = run_code("def g():\n    return 1 / 0\n\ng()\n")
    assert r.status == "error" and "ZeroDivisionError" in r.stderr and "in g" in r.stderr


def test_closing_output_does_not_end_the_run():
    r = run_code("import os, sys, time\nos.close(1)\nos.close(2)\ntime.sleep(0.3)\nsys.exit(3)\n")
    assert (r.status, r.returncode) == ("error", 3) and r.duration >= 0.3


def test_infinite_loop_is_killed_by_cpu_limit():
    # a wall clock far beyond the 1 s CPU limit, so a loaded machine cannot turn this into a timeout
    r = run_code("while True:\n    pass\n", SandboxConfig(cpu_seconds=1, wall_seconds=60))
    assert r.status == "killed" and r.returncode < 0
    assert "CPU" in r.detail
    assert r.duration < 60


def test_sleep_hits_wall_clock_timeout():
    r = run_code("import time\ntime.sleep(60)\n", SandboxConfig(wall_seconds=1))
    assert r.status == "timeout"
    assert 0.9 < r.duration < 3


def test_process_count_is_capped():
    code = dedent("""
        import os, time
        n = 0
        for _ in range(64):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            n += 1
        print(n, flush=True)
    """)
    r = run_code(code, SandboxConfig(nproc=8, wall_seconds=5))
    assert r.status == "ok", r.stderr
    assert int(r.stdout) < 8  # the main process counts too; without the limit this prints 64


def test_fork_bomb_is_contained_and_cleaned_up():
    code = dedent("""
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """)
    t0 = time.monotonic()
    r = run_code(code, SandboxConfig(cpu_seconds=2, wall_seconds=2))
    assert r.status in ("timeout", "killed")
    assert time.monotonic() - t0 < 6
    assert subprocess.run(["true"]).returncode == 0  # the host can still create processes
    # leftovers are checked by the autouse fixture: none of the bomb's processes survive


def test_setsid_escapees_are_killed():
    code = dedent("""
        import os, time
        for _ in range(4):
            if os.fork() == 0:
                os.setsid()
                time.sleep(60)
        print("parent done")
    """)
    r = run_code(code, FAST)
    assert r.status == "ok" and r.stdout == "parent done\n"
    assert not _leftovers()


def test_memory_hog_cannot_allocate_2gb():
    rss_before = psutil.Process().memory_info().rss
    r = run_code("x = bytearray(2 * 1024 ** 3)\nprint('allocated', len(x))\n")
    assert r.status in ("error", "killed")
    assert "allocated" not in r.stdout  # the machine has the memory: only RLIMIT_AS stops it
    assert r.status == "killed" or "MemoryError" in r.stderr
    assert psutil.Process().memory_info().rss - rss_before < 256 * 1024 ** 2


def test_gigabyte_of_output_is_bounded():
    code = dedent("""
        import sys
        chunk = "x" * (1 << 20)
        for _ in range(1024):
            sys.stdout.write(chunk)
    """)
    cfg = SandboxConfig()
    r = run_code(code, cfg)
    assert r.status == "output_limit" and r.truncated
    assert len(r.stdout) == cfg.output_bytes
    assert r.duration < 5


def _write_attempts(target: str) -> str:
    """Three ways to create `target`: builtins.open, os.open, and a shell (which no audit hook sees)."""
    return f"target = {target!r}\n" + dedent("""
        import os, subprocess
        for how in ("open", "os.open", "shell"):
            try:
                if how == "open":
                    open(target, "w").write("pwned")
                elif how == "os.open":
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT))
                else:
                    subprocess.run(["sh", "-c", f"echo pwned > {target}"], check=True)
                print("wrote via", how)
            except Exception as e:
                print(how, "failed:", e)
    """)


def _world_writable(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)  # so that only the sandbox, not directory permissions, can stop the write
    return outside / "pwned.txt"


def test_write_outside_workdir_is_blocked(tmp_path):
    target = _world_writable(tmp_path)
    r = run_code(_write_attempts(str(target)))
    assert not target.exists()
    assert "wrote via" not in r.stdout and r.stdout.count("failed") == 3


def test_write_outside_is_blocked_by_the_kernel_alone(tmp_path):
    if isolation().mounts is False and isolation().drop_uid is False:
        pytest.skip("no kernel filesystem layer here: only the Python guard stops writes")
    target = _world_writable(tmp_path)
    r = run_code(_write_attempts(str(target)), SandboxConfig(python_guards=False))
    assert not target.exists()
    assert "wrote via" not in r.stdout and r.stdout.count("failed") == 3


def test_workdir_is_writable_and_deleted_afterwards():
    r = run_code("import os\nopen('a.txt', 'w').write('ok')\nprint(os.getcwd())\n")
    assert r.status == "ok", r.stderr
    cwd = r.stdout.strip()
    assert "stratarl-sandbox-" in cwd and not os.path.exists(os.path.dirname(cwd))


def test_file_size_limit():
    cfg = SandboxConfig(file_size_bytes=1024 * 1024)
    r = run_code("open('big', 'wb').write(b'x' * (4 * 1024 * 1024))\n", cfg)
    assert r.status == "error" and "File too large" in r.stderr


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.3)
    yield srv
    srv.close()


def _connect_code(port: int) -> str:
    return f"port = {port}\n" + dedent("""
        import socket
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).sendall(b"hi")
            print("connected")
        except OSError as e:
            print("blocked:", e)
    """)


def _assert_listener_untouched(srv: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = srv.accept()
        conn.close()


@pytest.mark.parametrize("guards", [True, False], ids=["guards", "kernel-only"])
def test_socket_to_host_listener_does_not_connect(listener, guards):
    if not guards and not isolation().netns:
        pytest.skip("no network namespace here: only the socket-level guard blocks connections")
    r = run_code(_connect_code(listener.getsockname()[1]), SandboxConfig(python_guards=guards))
    assert "blocked:" in r.stdout and "connected" not in r.stdout
    assert r.network == ("namespace" if isolation().netns else "socket-block")
    _assert_listener_untouched(listener)


def test_guard_blocks_dns_lookups():
    """DNS goes through libc, not socket.connect: without a namespace it could leak data by itself."""
    r = run_code("import socket\nsocket.getaddrinfo('example.com', 80)\n")
    assert r.status == "error" and "socket.getaddrinfo is not allowed" in r.stderr


def test_listener_check_can_fail(listener):
    """The same connection from an unsandboxed interpreter does reach the listener."""
    out = subprocess.run([sys.executable, "-c", _connect_code(listener.getsockname()[1])],
                         capture_output=True, text=True, timeout=10).stdout
    assert "connected" in out
    conn, _ = listener.accept()
    conn.close()


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("STRATARL_TEST_SECRET", "s3cret")
    r = run_code("import os\nprint('env:', dict(os.environ))\n")
    assert r.status == "ok" and r.stdout.startswith("env:")
    assert "s3cret" not in r.stdout and "STRATARL_TEST_SECRET" not in r.stdout


def test_other_processes_environment_is_not_readable():
    if not isolation().drop_uid:
        pytest.skip("without root the sandbox shares the host uid, so /proc/<pid>/environ is readable")
    env = {**os.environ, "STRATARL_TEST_SECRET": "s3cret"}
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        r = run_code(f"pid = {holder.pid}\n" + dedent("""
            try:
                print(open(f"/proc/{pid}/environ").read())
            except OSError as e:
                print("denied:", e)
        """))
    finally:
        holder.kill()
        holder.wait()
    assert "s3cret" not in r.stdout and "denied:" in r.stdout
