"""Run untrusted Python source in a contained child process (SandboxFusion-style `run_code`).

Every run gets a fresh `python -I -B` interpreter (the current one by default), in its own session,
in a fresh temporary working directory that is deleted afterwards, with a minimal environment (no
host variables) and stdin from /dev/null. Layers, strongest first (docs/security.md has the threat
model and what each layer does and does not guarantee):

Kernel-enforced (hold whatever the code does, ctypes and raw syscalls included):
- resource limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE=0;
- a wall-clock deadline; the process group and, when a private uid is used, every process of that
  uid are SIGKILLed at the end, so `setsid()`-escaped children do not survive the run;
- when running as root: the code runs as a fresh, unused uid (`drop_uid`), so RLIMIT_NPROC bites
  (root is exempt from it), filesystem permissions apply, and it cannot signal or ptrace host processes;
- a network namespace (`netns`): only a down loopback interface, so no connection leaves the child
  (with any namespace, IPC and UTS namespaces too: no host SysV shared memory or message queues);
- a private mount namespace (`mounts`): every mount is remounted read-only except the working
  directory, which is a size-capped tmpfs; a non-traversable ancestor of the interpreter (e.g. /root)
  is replaced by a tmpfs that exposes only the interpreter's prefixes (read-only).
  Without root, a user namespace is tried for the network and mount namespaces.

Best effort, Python level (an audit hook installed before the code runs, `python_guards`): writes
outside the working directory, socket connect/bind/send and process spawning raise PermissionError.
It is the only network barrier when no namespace is available (`network == "socket-block"`), but
code can step around it (ctypes, os.open with dir_fd), so it is a second line, not a guarantee.

Which kernel layers work is probed once per interpreter (`isolation`) by running a check script and
verifying each property; a result says which layers were in effect (`network`, `filesystem`, `uid`).
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import re
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field

KiB, MiB = 1024, 1024 * 1024

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x400, 0x800, 0x1000, 0x4000
MS_PRIVATE, MS_RELATIME = 0x40000, 0x200000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38

# statvfs flags of a mount that a read-only bind remount must keep (dropping them is refused or weakens it)
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
# signals by which the kernel enforces a resource limit (SIGXCPU at the soft CPU limit, SIGKILL at the hard)
_LIMIT_SIGNALS = {signal.SIGXCPU: "CPU-time limit", signal.SIGKILL: "killed (CPU hard limit or SIGKILL)",
                  signal.SIGXFSZ: "file-size limit", signal.SIGSEGV: "segfault (stack or memory limit)",
                  signal.SIGBUS: "bus error (memory limit)"}
_EXIT_GRACE_S = 0.1  # after the main process exits, how long to keep reading output held open by children
_SWEEP_S = 2.0  # most time spent killing and reaping leftover processes of a private uid

STATUSES = ("ok", "error", "timeout", "killed", "output_limit")


class SandboxUnavailable(RuntimeError):
    """No isolation plan works here and running the code unisolated was not allowed."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one run. Sizes are bytes, times seconds."""

    cpu_seconds: float = 5.0
    """RLIMIT_CPU per process (rounded up to whole seconds; SIGKILL one second later)."""
    wall_seconds: float = 10.0
    """Wall-clock deadline of the run; the whole process group is killed when it passes."""
    memory_bytes: int = 512 * MiB
    """RLIMIT_AS: address space per process."""
    file_size_bytes: int = 1 * MiB
    """RLIMIT_FSIZE: the largest file a process may write."""
    nproc: int = 16
    """Processes (threads included) the code may have at once (RLIMIT_NPROC of its uid)."""
    open_files: int = 256
    """RLIMIT_NOFILE."""
    output_bytes: int = 64 * KiB
    """Bytes of stdout and of stderr kept in the result; beyond it the result is marked truncated."""
    output_hard_cap_bytes: int = 4 * MiB
    """Total output (both streams) after which the run is killed with status `output_limit`."""
    disk_bytes: int = 32 * MiB
    """Size of the tmpfs working directory (with a private mount namespace only)."""
    python: str = sys.executable
    """Interpreter that runs the code (as `python -I -B`)."""
    python_guards: bool = True
    """Install the best-effort audit-hook guards (writes outside cwd, sockets, spawning)."""
    allow_root: bool = False
    """When running as root and no plan can drop root, run anyway (as root) instead of refusing."""
    uid_base: int = 3_000_000_000
    """Private uids are drawn from [uid_base, uid_base + 2**20) (root only)."""
    tmp_root: str | None = None
    """Parent directory of the per-run temporary directories (default: the system temp dir)."""


@dataclass
class SandboxResult:
    """Outcome of one run. `status` is one of STATUSES; `network` is "namespace", "socket-block" or
    "none"; `filesystem` is "readonly-mounts", "uid" or "python-guard" (or "none")."""

    status: str
    stdout: str
    stderr: str
    duration: float
    returncode: int | None
    network: str
    truncated: bool = False
    filesystem: str = "none"
    uid: int | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """Kernel mechanisms of a run: network namespace, read-only mount namespace, a private uid (root
    only) or a user namespace (non-root only, to be allowed the other namespaces)."""

    netns: bool = False
    mounts: bool = False
    drop_uid: bool = False
    userns: bool = False

    def ns_kind(self) -> str:
        """The namespace that tells this run's processes apart ("net" or "mnt"; "" if none)."""
        return "net" if self.netns else "mnt" if self.mounts else ""

    def labels(self, guards: bool) -> tuple[str, str]:
        """The (network, filesystem) mechanism names reported in results."""
        net = "namespace" if self.netns else "socket-block" if guards else "none"
        fs = "python-guard" if guards else "none"
        fs = "readonly-mounts" if self.mounts else "uid" if self.drop_uid else fs
        return net, fs


@dataclass(frozen=True)
class _Layout:
    """The per-run temporary directory: `run_dir` (cwd of the code), `code_path`, and the
    interpreter paths that must be re-exposed under a hidden (non-traversable) ancestor."""

    workdir: str
    run_dir: str
    code_path: str
    reveal: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # (hidden dir, ((path, stash), ...))


@dataclass
class _Output:
    """Bounded capture of one stream: at most `keep` bytes are stored, `seen` counts all of them."""

    keep: int
    data: bytearray = field(default_factory=bytearray)
    seen: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.keep - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.seen += len(chunk)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- the prelude (runs inside the child)

PRELUDE = r'''
import os, sys

def _guard(root):
    """Best-effort audit hook: no writes outside `root`, no sockets reaching out, no spawning."""
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # event -> (indices of path arguments, indices of dir_fd arguments)
    paths = {"os.remove": ((0,), (1,)), "os.rename": ((0, 1), (2, 3)), "os.mkdir": ((0,), (2,)),
             "os.rmdir": ((0,), (1,)), "os.symlink": ((1,), (2,)), "os.link": ((0, 1), (2, 3)),
             "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.truncate": ((0,), ()),
             "os.utime": ((0,), (3,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ())}
    denied = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
              "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",  # DNS leaks data too
              "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "os.forkpty",
              "pty.spawn"}
    realpath, fspath, fsdecode = os.path.realpath, os.fspath, os.fsdecode

    def inside(p):
        if isinstance(p, int):
            return True  # an already-open descriptor
        try:
            r = realpath(fsdecode(fspath(p)))
        except Exception:
            return False
        return r == root or r.startswith(root + "/") or r == "/dev/null"

    def deny(event, arg):
        raise PermissionError(13, f"sandbox: {event} is not allowed", str(arg))

    def hook(event, args):
        if event in denied:
            deny(event, args[-1] if args else "")
        elif event == "open" and isinstance(args[2], int) and args[2] & write and not inside(args[0]):
            deny("writing outside the working directory", args[0])
        elif event in paths:
            where, fds = paths[event]
            if any(isinstance(args[i], int) and args[i] >= 0 for i in fds):
                deny(f"{event} relative to a directory descriptor", args[where[0]])
            for i in where:
                if not inside(args[i]):
                    deny(f"{event} outside the working directory", args[i])

    sys.addaudithook(hook)

def _trim(kind, value, tb, _mine=globals()):
    """Print tracebacks without the prelude's own frames."""
    kept = []
    while tb is not None:
        if tb.tb_frame.f_globals is not _mine:
            kept.append(tb)
        tb = tb.tb_next
    for t in reversed(kept):
        tb = type(t)(tb, t.tb_frame, t.tb_lasti, t.tb_lineno)
    sys.__excepthook__(kind, value.with_traceback(tb), tb)

def _load():
    path, root, guards = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    with open(path, "rb") as f:
        source = f.read()
    if guards:
        _guard(os.path.realpath(root))
    sys.argv, sys.excepthook = [path], _trim
    return compile(source, path, "exec"), path

_code, _path = _load()
exec(_code, {"__name__": "__main__", "__file__": _path, "__builtins__": __builtins__})
'''


# ---------------------------------------------------------------- kernel calls (ctypes, no extra deps)

@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc().mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)), f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc().prctl(option, value, 0, 0, 0), f"prctl {option}")


# ---------------------------------------------------------------- child side (preexec: fork → exec)

def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _map_self(uid: int, gid: int) -> None:
    """In a fresh user namespace, map our own uid/gid to themselves (what an unprivileged user may do);
    exec then drops the namespace capabilities because the uid is not 0 inside."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


def _mountpoints() -> list[str]:
    """Mount points of this mount namespace (field 5 of mountinfo, octal escapes decoded)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), p) for p in points]


def _kept_flags(path: str) -> int:
    st = os.statvfs(path).f_flag
    return sum(ms for st_flag, ms in _KEPT_FLAGS if st & st_flag)


def _reveal(hidden: str, exposed: tuple[tuple[str, str], ...]) -> None:
    """Cover `hidden` with an empty tmpfs and bind back only the `exposed` paths (via stash mounts)."""
    for path, stash in exposed:
        _mount(path, stash, None, MS_BIND | MS_REC)
    _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path, stash in exposed:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(stash, path, None, MS_BIND | MS_REC)
        _check(_libc().umount2(_enc(stash), MNT_DETACH), f"umount {stash}")


def _jail_mounts(layout: _Layout, disk_bytes: int, uid: int, gid: int) -> None:
    """Private mount namespace: tmpfs working dir, everything else read-only."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for hidden, exposed in layout.reveal:
        _reveal(hidden, exposed)
    opts = f"size={disk_bytes},nr_inodes=4096,mode=0700,uid={uid},gid={gid}"
    _mount("tmpfs", layout.run_dir, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    for point in _mountpoints():
        if point != layout.run_dir:
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _kept_flags(point))


def _lower(kind: int, value: int) -> None:
    """Set soft and hard limit to `value`, never above the current hard limit."""
    _, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def _set_limits(cfg: SandboxConfig, nproc: int) -> None:
    cpu = max(1, math.ceil(cfg.cpu_seconds))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    kill_at = cpu + 1 if hard == resource.RLIM_INFINITY else min(cpu + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, kill_at), kill_at))  # SIGXCPU, then SIGKILL
    for kind, value in ((resource.RLIMIT_AS, cfg.memory_bytes), (resource.RLIMIT_FSIZE, cfg.file_size_bytes),
                        (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_NOFILE, cfg.open_files),
                        (resource.RLIMIT_CORE, 0)):
        _lower(kind, value)


def _drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _child_setup(plan: Plan, layout: _Layout, cfg: SandboxConfig, ids: tuple[int, int], nproc: int,
                 report_fd: int | None) -> Callable[[], None]:
    """The preexec function: namespaces, mounts, limits, then privileges dropped, in that order
    (the namespaces and mounts need the privileges; the limits must be set before code can run).
    When `report_fd` is given, the id of the new namespace is written to it (see `_spawn`)."""
    uid, gid = ids
    outer_uid, outer_gid = os.getuid(), os.getgid()
    _libc()  # load libc here, in the parent: no dlopen between fork and exec
    flags = ((CLONE_NEWUSER if plan.userns else 0) | (CLONE_NEWNET if plan.netns else 0)
             | (CLONE_NEWNS if plan.mounts else 0))
    flags |= CLONE_NEWIPC | CLONE_NEWUTS if flags else 0  # with any namespace: no host SysV IPC either

    def setup() -> None:
        os.umask(0o022)
        if flags:
            _check(_libc().unshare(flags), "unshare")
        if report_fd is not None:
            os.write(report_fd, os.fsencode(os.readlink(f"/proc/self/ns/{plan.ns_kind()}")))
        if plan.userns:
            _map_self(outer_uid, outer_gid)
        if plan.mounts:
            _jail_mounts(layout, cfg.disk_bytes, uid, gid)
        os.chdir(layout.run_dir)  # re-enter: the tmpfs now covers the directory Popen chdir'ed into
        _set_limits(cfg, nproc)
        if plan.drop_uid:
            _drop_to(uid, gid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it

    return setup


# ---------------------------------------------------------------- host side: processes

_STATUS_RE = re.compile(rb"\nState:\t(\S).*?\nPPid:\t(\d+).*?\nUid:\t(\d+)", re.DOTALL)


def _processes_of(uid: int) -> list[tuple[int, int, str]]:
    """(pid, ppid, state letter) of every process whose real uid is `uid` (read from /proc/*/status,
    which stays accurate even for processes that made themselves non-dumpable)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                m = _STATUS_RE.search(f.read())
        except OSError:
            continue
        if m is not None and int(m[3]) == uid:
            found.append((int(pid), int(m[2]), m[1].decode()))
    return found


def _fresh_uid(cfg: SandboxConfig) -> int:
    while True:
        uid = cfg.uid_base + secrets.randbelow(1 << 20)
        if not _processes_of(uid):
            return uid


@functools.cache
def _become_subreaper() -> None:
    """Make this process the reaper of orphaned sandbox processes, so they can be waited for (and
    leave no zombies) even where PID 1 does not reap. Process-wide and permanent; done once."""
    with suppress(OSError):
        _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _namespace_of(pid: int, kind: str) -> str | None:
    with suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    return None


def _finder(uid: int | None, ns: tuple[str, str] | None) -> Callable[[], list[tuple[int, int, str]]] | None:
    """How to find the run's leftover processes: every process of its private uid, or else every
    process of ours inside its namespace; None when neither exists (the process group is all we have)."""
    if uid is not None:
        return lambda: _processes_of(uid)
    if ns is not None:
        kind, ident = ns
        return lambda: [p for p in _processes_of(os.getuid()) if _namespace_of(p[0], kind) == ident]
    return None


def _sweep(find: Callable[[], list[tuple[int, int, str]]]) -> int:
    """SIGKILL every process `find` returns and reap those reparented to us, until none is left
    (RLIMIT_NPROC bounds how many can be forked meanwhile). Returns how many survived (normally 0)."""
    me, stop, procs = os.getpid(), time.monotonic() + _SWEEP_S, []
    while time.monotonic() < stop:
        procs = [p for p in find() if p[2] != "Z" or p[1] == me]
        if not procs:
            return 0
        for pid, _, _ in procs:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid, ppid, _ in procs:
            if ppid == me:
                with suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        time.sleep(0.001)
    return len(procs)


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the main process ended, without reaping it (so its pid keeps naming its group)."""
    with suppress(ChildProcessError):
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return True


def _terminate(proc: subprocess.Popen, find: Callable[[], list[tuple[int, int, str]]] | None) -> int:
    """Kill the process group (the main process leads it, so its pid still names the group), reap
    the main process, then sweep what left the group (`setsid()`). Returns the survivors' count."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return _sweep(find) if find is not None else 0


@dataclass
class _Pumped:
    out: _Output
    err: _Output
    timed_out: bool = False
    flooded: bool = False


def _pump(proc: subprocess.Popen, cfg: SandboxConfig, deadline: float) -> _Pumped:
    """Read both pipes until the main process has exited and the pipes are at EOF (or, if children
    still hold them, a short grace has passed), the deadline, or the hard output cap; memory use
    stays bounded whatever the code prints."""
    res = _Pumped(_Output(cfg.output_bytes), _Output(cfg.output_bytes))
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, res.out)
    sel.register(proc.stderr, selectors.EVENT_READ, res.err)
    exited_at = None
    with sel:
        while True:
            now = time.monotonic()
            if now >= deadline:
                res.timed_out = True
                break
            if exited_at is None and _has_exited(proc):
                exited_at = now
            if exited_at is not None and (not sel.get_map() or now - exited_at > _EXIT_GRACE_S):
                break
            if not sel.get_map():  # the code closed its output but still runs
                time.sleep(min(0.01, deadline - now))
                continue
            for key, _ in sel.select(timeout=min(deadline - now, 0.05)):
                chunk = os.read(key.fd, 64 * KiB)
                if not chunk:
                    sel.unregister(key.fileobj)
                key.data.add(chunk)
            if res.out.seen + res.err.seen > cfg.output_hard_cap_bytes:
                res.flooded = True
                break
    return res


def _status(rc: int, pumped: _Pumped, cfg: SandboxConfig) -> tuple[str, str]:
    if pumped.flooded:
        return "output_limit", f"output over the {cfg.output_hard_cap_bytes} byte hard cap"
    if pumped.timed_out:
        return "timeout", f"wall-clock timeout after {cfg.wall_seconds:g} s"
    if rc < 0 and -rc in _LIMIT_SIGNALS:
        return "killed", f"{signal.Signals(-rc).name}: {_LIMIT_SIGNALS[-rc]}"
    if rc < 0:
        return "error", f"killed by {signal.Signals(-rc).name}"
    return ("ok", "") if rc == 0 else ("error", f"exit status {rc}")


# ---------------------------------------------------------------- host side: the temporary directory

def _needed_paths(python: str) -> list[str]:
    """Directories the interpreter must read: its prefix(es)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        found = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    else:
        found = {os.path.dirname(os.path.dirname(os.path.realpath(python)))}
    return sorted(found)


def _blocking_ancestor(path: str) -> str | None:
    """The first proper ancestor of `path` that others cannot traverse (mode lacks o+x), if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        anc = "/" + "/".join(parts[:i])
        if not os.stat(anc).st_mode & 0o001:
            return anc
    return None


def _reveal_plan(python: str, workdir: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """For each non-traversable ancestor of the interpreter: which of its paths to bind back."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for i, path in enumerate(_needed_paths(python)):
        anc = _blocking_ancestor(path)
        if anc is not None:
            stash = os.path.join(workdir, f".stash{i}")
            os.mkdir(stash, 0o700)
            groups.setdefault(anc, []).append((path, stash))
    return tuple((anc, tuple(items)) for anc, items in groups.items())


def _make_layout(code: str, cfg: SandboxConfig, plan: Plan, uid: int | None) -> _Layout:
    workdir = tempfile.mkdtemp(prefix="stratarl-sandbox-", dir=cfg.tmp_root)
    run_dir, code_path = os.path.join(workdir, "run"), os.path.join(workdir, "main.py")
    os.mkdir(run_dir, 0o700)
    with open(code_path, "w", encoding="utf-8") as f:
        f.write(code)
    reveal = _reveal_plan(cfg.python, workdir) if plan.drop_uid and plan.mounts else ()
    if uid is not None:  # the private uid may traverse the directory, read the code, own its cwd
        os.chmod(workdir, 0o711)
        for path in (run_dir, code_path):
            os.chown(path, uid, uid)
        os.chmod(code_path, 0o400)
    return _Layout(os.path.realpath(workdir), os.path.realpath(run_dir), os.path.realpath(code_path), reveal)


def _remove_tree(path: str) -> None:
    def retry(func: Callable, p: str, _exc: object) -> None:
        with suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=retry)


def _minimal_env(run_dir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": run_dir, "TMPDIR": run_dir,
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


# ---------------------------------------------------------------- running

def _spawn(layout: _Layout, cfg: SandboxConfig, plan: Plan, guards: bool,
           uid: int | None) -> tuple[subprocess.Popen, tuple[str, str] | None]:
    """Start the child; returns it and (kind, id) of its namespace when it has one and no private uid
    (the id is written by the child before exec, so it is known even if the child exits at once)."""
    ids = (uid, uid) if uid is not None else (os.getuid(), os.getgid())
    nproc = cfg.nproc if uid is not None else len(_processes_of(os.getuid())) + cfg.nproc
    argv = [cfg.python, "-I", "-B", "-c", PRELUDE, layout.code_path, layout.run_dir, "1" if guards else "0"]
    want_ns = uid is None and plan.ns_kind() != ""
    read_fd, write_fd = os.pipe() if want_ns else (None, None)
    try:
        setup = _child_setup(plan, layout, cfg, ids, nproc, write_fd)
        pipe = subprocess.PIPE
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, cwd=layout.run_dir,
                                env=_minimal_env(layout.run_dir), start_new_session=True, preexec_fn=setup)
    except BaseException:
        if read_fd is not None:
            os.close(read_fd)
        raise
    finally:
        if write_fd is not None:
            os.close(write_fd)
    if read_fd is None:
        return proc, None
    try:  # written before exec and Popen returns after exec: all there is, so never wait for EOF
        os.set_blocking(read_fd, False)
        ident = os.fsdecode(os.read(read_fd, 4096))
    finally:
        os.close(read_fd)
    return proc, (plan.ns_kind(), ident)


def _run(layout: _Layout, cfg: SandboxConfig, plan: Plan, guards: bool, uid: int | None) -> SandboxResult:
    start = time.monotonic()
    proc, ns = _spawn(layout, cfg, plan, guards, uid)
    try:
        pumped = _pump(proc, cfg, start + cfg.wall_seconds)
        duration = time.monotonic() - start
    finally:
        survivors = _terminate(proc, _finder(uid, ns))
    status, detail = _status(proc.returncode, pumped, cfg)
    if survivors:
        detail += f" ({survivors} leftover processes could not be killed in {_SWEEP_S:g} s)"
    network, filesystem = plan.labels(guards)
    truncated = pumped.out.seen > cfg.output_bytes or pumped.err.seen > cfg.output_bytes
    return SandboxResult(status, pumped.out.text(), pumped.err.text(), round(duration, 4), proc.returncode,
                         network, truncated, filesystem, uid, detail)


def _execute(code: str, cfg: SandboxConfig, plan: Plan, guards: bool) -> SandboxResult:
    uid = _fresh_uid(cfg) if plan.drop_uid else None
    if uid is not None:
        _become_subreaper()
    layout = _make_layout(code, cfg, plan, uid)
    try:
        return _run(layout, cfg, plan, guards, uid)
    finally:
        _remove_tree(layout.workdir)


_PROBE = r"""
import json, os, socket, sys
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
print(json.dumps({"uid": os.getuid(), "version": sys.version, "prefix": sys.prefix,
                  "ifaces": sorted(name for _, name in socket.if_nameindex()),
                  "root_ro": bool(os.statvfs("/").f_flag & os.ST_RDONLY), "cwd_rw": writable(".")}))
"""


def _reference(python: str) -> dict:
    """Version and prefix of the interpreter run plainly, to check a sandboxed one matches it."""
    code = "import json, sys; print(json.dumps({'version': sys.version, 'prefix': sys.prefix}))"
    out = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def _verify(plan: Plan, res: SandboxResult, ref: dict) -> str:
    """Why `plan` did not deliver what it promises, or "" when it did."""
    if res.status != "ok":
        return f"probe {res.status}: {res.detail} {res.stderr[-300:]}"
    got = json.loads(res.stdout)
    checks = {"same interpreter": got["version"] == ref["version"] and got["prefix"] == ref["prefix"],
              "writable cwd": got["cwd_rw"],
              "private uid": not plan.drop_uid or got["uid"] == res.uid,
              "loopback only": not plan.netns or got["ifaces"] == ["lo"],
              "read-only root": not plan.mounts or got["root_ro"]}
    return ", ".join(f"no {name}" for name, ok in checks.items() if not ok)


def _candidates(is_root: bool, allow_root: bool) -> list[Plan]:
    """Plans to try, strongest first."""
    combos = ((True, True), (False, True), (True, False), (False, False))
    if not is_root:
        return [Plan(netns=n, mounts=m, userns=n or m) for n, m in combos]
    plans = [Plan(netns=n, mounts=m, drop_uid=True) for n, m in combos]
    return plans + ([Plan(netns=n, mounts=m) for n, m in combos] if allow_root else [])


def _try(plan: Plan, cfg: SandboxConfig, ref: dict) -> str:
    try:
        return _verify(plan, _execute(_PROBE, cfg, plan, guards=False), ref)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"


@functools.lru_cache(maxsize=8)
def _probe(python: str, allow_root: bool, tmp_root: str | None, euid: int) -> tuple[Plan, tuple[str, ...]]:
    cfg = SandboxConfig(python=python, allow_root=allow_root, tmp_root=tmp_root)
    ref, failures = _reference(python), []
    for plan in _candidates(euid == 0, allow_root):
        why = _try(plan, cfg, ref)
        if not why:
            return plan, tuple(failures)
        failures.append(f"{plan}: {why}")
    raise SandboxUnavailable("no sandbox plan works here (running as root needs one that drops root; "
                             "SandboxConfig(allow_root=True) runs as root instead):\n" + "\n".join(failures))


def isolation(cfg: SandboxConfig = SandboxConfig()) -> Plan:
    """The strongest plan that works on this machine for `cfg.python` (probed once, then cached)."""
    return _probe(cfg.python, cfg.allow_root, cfg.tmp_root, os.geteuid())[0]


def run_code(code: str, cfg: SandboxConfig = SandboxConfig()) -> SandboxResult:
    """Run Python `code` in a fresh sandboxed interpreter and return what happened.

    >>> run_code("print(1 + 1)").stdout
    '2\\n'
    """
    return _execute(code, cfg, isolation(cfg), cfg.python_guards)
