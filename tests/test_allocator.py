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
