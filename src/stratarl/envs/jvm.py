"""One JVM per environment family per process, shared by every game instance of that family.

TextWorldExpress and ScienceWorld both expose a `PythonInterface` class over py4j. A single JVM
can hold many independent `PythonInterface` objects, so an env instance costs one Java object,
not one JVM (a ScienceWorld JVM is ~0.9 GB resident).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from py4j.java_gateway import CallbackServerParameters, GatewayParameters, JavaGateway, launch_gateway


@dataclass
class Jvm:
    """A running JVM with its py4j gateway."""

    gateway: JavaGateway
    """The py4j gateway connected to it."""
    pid: int
    """Process id of the `java` process."""

    @property
    def jvm(self) -> Any:
        return self.gateway.jvm

    def alive(self) -> bool:
        return self.gateway.java_process.poll() is None

    def close(self) -> None:
        proc = self.gateway.java_process
        try:
            self.gateway.shutdown()
        except Exception:  # noqa: BLE001 - the JVM may already be gone
            pass
        if proc.poll() is None:
            try:  # py4j's JVM exits when its stdin gets a newline / closes (die_on_exit)
                proc.stdin.write(b"\n")
                proc.stdin.flush()
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001
                proc.kill()
                proc.wait(timeout=5)


EXTRA_JAVA_OPTS: list[str] = os.environ.get("STRATARL_JAVA_OPTS", "").split()
# ScienceWorld keeps objects in hash sets keyed by identity hash codes, which the JVM draws at random:
# the same variation then lists its objects in a different order from one load to the next (and gold
# paths pick different animals). A constant identity hash makes every load identical; it costs
# ScienceWorld 15-40% in steps/s, a price worth paying for reproducible rollouts and MC replays.
FAMILY_JAVA_OPTS = {"sciworld": ["-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2"], "twx": []}

_JVMS: dict[str, Jvm] = {}
_LOCK = threading.Lock()


def jar_path(family: str) -> tuple[str, str]:
    """(jar, working dir) of a family's bundled jar."""
    if family == "twx":
        from textworld_express.constants import BASEPATH, JAR_PATH
    elif family == "sciworld":
        from scienceworld.constants import BASEPATH, JAR_PATH
    else:  # pragma: no cover - internal misuse
        raise ValueError(family)
    return JAR_PATH, BASEPATH


def get_jvm(family: str) -> Jvm:
    """This process's JVM for `family`, started on first use and restarted if it died."""
    with _LOCK:
        jvm = _JVMS.get(family)
        if jvm is None or not jvm.alive():
            if jvm is not None:
                jvm.close()
            jvm = _JVMS[family] = _launch(*jar_path(family), FAMILY_JAVA_OPTS.get(family, []))
        return jvm


def shutdown_all() -> None:
    with _LOCK:
        for jvm in _JVMS.values():
            jvm.close()
        _JVMS.clear()


def java_pids() -> list[int]:
    return [j.pid for j in _JVMS.values() if j.alive()]


def _launch(jar: str, cwd: str, family_opts: list[str]) -> Jvm:
    opts = ["-Xss8m", "-XX:+UseSerialGC", "-Xshare:auto", *family_opts, *EXTRA_JAVA_OPTS]
    port, proc = launch_gateway(classpath=jar, die_on_exit=True, cwd=cwd, javaopts=opts, return_proc=True)
    gateway = JavaGateway(
        gateway_parameters=GatewayParameters(auto_field=True, port=port),
        callback_server_parameters=CallbackServerParameters(port=0, daemonize=True),
        java_process=proc,
    )
    py_port = gateway.get_callback_server().get_listening_port()
    server = gateway.java_gateway_server
    server.resetCallbackClient(server.getCallbackClient().getAddress(), py_port)
    return Jvm(gateway=gateway, pid=proc.pid)


atexit.register(shutdown_all)
# py4j logs a stack trace for every call on a dead JVM; we report those errors ourselves.
logging.getLogger("py4j").setLevel(logging.CRITICAL)
