"""jemalloc for the `stratarl` command, where the system has it.

glibc's malloc keeps a training process's freed activations in arenas that fragment as row lengths
vary: over 200 steps of the quickstart's warm-up SFT the process grew from 2.4 to 4.5 GB and its
step time from 0.83 to 1.05 s; a 12 M-parameter model's SFT reached 10 GB and slowed from 2.6 to
4.4 s a step. Under jemalloc the same 200 steps stay at 1.85 GB and 0.79 s a step; the whole warm-up (400 steps)
takes 201 s instead of 354 s, and quickstart RL iterations 10-14 s instead of 15-19 s (docs/performance.md).
Fixing glibc's mmap threshold instead returns every large tensor to the OS and pays page faults
(1.3 s a step). The allocator is chosen when a process starts, so the console script re-executes
itself once with jemalloc preloaded; child processes (env workers, the JVM, Ray) inherit it.

`STRATARL_MALLOC=system` keeps the system allocator. Without a jemalloc library (Debian/Ubuntu:
`apt-get install libjemalloc2`, which `make` does) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ENV_VAR = "STRATARL_MALLOC"
CHOICES = ("jemalloc", "system")
DECAY_OFF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
"""jemalloc's `MALLOC_CONF` unless the user set one: freed pages are kept for reuse, not returned to the OS
after 10 s. An RL iteration frees its update's activations, generates for ~5 s, then allocates them again:
with the default decay the first updates ran 2-3x slower, refaulting the pages; any decay tried (1 s lazy,
30 s) cost the quickstart's RL 1.1-1.4x. Kept pages are not always reused: SmolLM2's RL update frees
activations of ever-changing sizes and its process grew past 24 GB, so `relieve_pressure` returns them
above `PRESSURE` of the machine's memory."""
PRESSURE = 0.5
"""Resident fraction of physical memory above which `relieve_pressure` purges jemalloc's freed pages."""
ARENAS_ALL = 4096
"""jemalloc's MALLCTL_ARENAS_ALL: `arena.4096.purge` purges every arena."""
LIBRARIES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def find_jemalloc(candidates: Sequence[str] = LIBRARIES) -> str | None:
    """The first jemalloc shared library that exists, or None."""
    return next((p for p in candidates if Path(p).is_file()), None)


def preload_env(environ: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to re-execute with (`library` prepended to LD_PRELOAD, `MALLOC_CONF` defaulting to
    `DECAY_OFF`), or None when nothing changes: `STRATARL_MALLOC=system`, jemalloc already preloaded, no library, or not Linux.
    An unknown `STRATARL_MALLOC` raises ValueError naming the choices."""
    choice = environ.get(ENV_VAR, "jemalloc")
    if choice not in CHOICES:
        raise ValueError(f"{ENV_VAR}={choice!r} is not one of {', '.join(CHOICES)}")
    preload = environ.get("LD_PRELOAD", "")
    if choice == "system" or library is None or "jemalloc" in preload or not sys.platform.startswith("linux"):
        return None
    return {"MALLOC_CONF": DECAY_OFF, **environ, "LD_PRELOAD": f"{library} {preload}".strip()}


def reexec_with_jemalloc() -> None:
    """Replace this process by the same command with jemalloc preloaded (see the module docstring);
    returns when nothing changes or the exec fails (the run then goes on under the system allocator)."""
    try:
        env = preload_env(os.environ, find_jemalloc())
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    args = list(sys.orig_argv)
    if env is None or not sys.executable or not args:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, args, env)
    except OSError:
        return


def active() -> str:
    """`jemalloc` when this process has it mapped, else `system`."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in maps else "system"


def resident_fraction() -> float:
    """This process's resident memory over the machine's physical memory (0 where unknown)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages / os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, IndexError):
        return 0.0


def release_freed_memory() -> bool:
    """Give jemalloc's freed pages back to the OS now; False when jemalloc is not this process's allocator."""
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return False
    return mallctl(f"arena.{ARENAS_ALL}.purge".encode(), None, None, None, ctypes.c_size_t(0)) == 0


def relieve_pressure(limit: float = PRESSURE) -> bool:
    """Purge jemalloc's freed pages when this process holds more than `limit` of the machine's memory (a
    /proc read otherwise); True when it purged."""
    return resident_fraction() > limit and release_freed_memory()
