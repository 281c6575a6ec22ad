"""jemalloc preloading for the console script (stratarl/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stratarl.allocator import DECAY_OFF, find_jemalloc, preload_env

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_preload_env_prepends_the_library_and_keeps_other_preloads():
    env = preload_env({"PATH": "/bin", "LD_PRELOAD": "/opt/other.so"}, LIB)
    assert env == {"PATH": "/bin", "LD_PRELOAD": f"{LIB} /opt/other.so", "MALLOC_CONF": DECAY_OFF}
    assert preload_env({}, LIB) == {"LD_PRELOAD": LIB, "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    assert preload_env({"MALLOC_CONF": "narenas:2"}, LIB)["MALLOC_CONF"] == "narenas:2"  # the user's own wins


@pytest.mark.parametrize("environ, library", [
    ({"STRATARL_MALLOC": "system"}, LIB),   # opted out
    ({"LD_PRELOAD": LIB}, LIB),             # already preloaded: the re-executed process stops here
    ({}, None),                             # no jemalloc on this system
])
def test_preload_env_changes_nothing(environ, library):
    assert preload_env(environ, library) is None


def test_unknown_choice_names_the_valid_ones():
    with pytest.raises(ValueError, match="'tcmalloc' is not one of jemalloc, system"):
        preload_env({"STRATARL_MALLOC": "tcmalloc"}, LIB)


def test_find_jemalloc_takes_the_first_existing_file(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert find_jemalloc([str(tmp_path / "missing.so"), str(lib)]) == str(lib)
    assert find_jemalloc([str(tmp_path / "missing.so")]) is None


PROBE = ("import sys; from stratarl.allocator import reexec_with_jemalloc, active; "
         "reexec_with_jemalloc(); print(active(), sys.argv[1:])")


@pytest.mark.skipif(find_jemalloc() is None, reason="no libjemalloc on this system (apt-get install libjemalloc2)")
def test_the_process_reexecutes_itself_under_jemalloc():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "STRATARL_MALLOC")}
    out = subprocess.run([sys.executable, "-c", PROBE, "a", "b"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "jemalloc ['a', 'b']"  # same arguments, jemalloc mapped
    off = subprocess.run([sys.executable, "-c", PROBE], env={**env, "STRATARL_MALLOC": "system"},
                         capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "system []"
    bad = subprocess.run([sys.executable, "-c", PROBE], env={**env, "STRATARL_MALLOC": "tcmalloc"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "is not one of jemalloc, system" in bad.stderr and "Traceback" not in bad.stderr


RELIEVE = ("import torch; from stratarl.allocator import relieve_pressure, resident_fraction; "
           "xs = [torch.ones(25_000_000) for _ in range(10)]; del xs; before = resident_fraction(); "
           "kept = relieve_pressure(limit=before + 0.01); purged = relieve_pressure(limit=0.0); "
           "print(kept, purged, before - resident_fraction())")


@pytest.mark.skipif(find_jemalloc() is None, reason="no libjemalloc on this system (apt-get install libjemalloc2)")
def test_relieve_pressure_returns_freed_pages_only_above_the_limit():
    """1 GB allocated and freed under jemalloc with decay off stays resident; below the limit nothing
    happens, above it the purge gives it back (the resident fraction falls by ~1 GB / physical memory)."""
    env = {**os.environ, "LD_PRELOAD": find_jemalloc(), "MALLOC_CONF": DECAY_OFF}
    out = subprocess.run([sys.executable, "-c", RELIEVE], env=env, capture_output=True, text=True, check=True)
    kept, purged, fall = out.stdout.split()
    assert (kept, purged) == ("False", "True")
    assert float(fall) * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") > 0.8e9


def test_relieve_pressure_is_a_no_op_without_jemalloc():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", "from stratarl.allocator import relieve_pressure, active; "
                          "print(active(), relieve_pressure(limit=0.0))"], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["system", "False"]
