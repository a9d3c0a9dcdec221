"""Child processes die with the service: no inspection, compilation or training worker outlives it,
even when it is killed with ``kill -9``.

Our children are forked by the multiprocessing fork server, so their parent is that server, not the
API process. The chain is: the API process dies, the fork server sees its alive pipe close and exits,
and the kernel sends every child it forked SIGKILL, because each child asked for that with
``prctl(PR_SET_PDEATHSIG)`` as its first act. One link needs help: multiprocessing hands each child a
copy of the write end of that alive pipe, so while any child runs the fork server never sees it
close. Each child closes its copy first thing. Where prctl or that copy is missing (not Linux, another
Python), a thread in the child waits for the API process to go instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver
from multiprocessing.connection import wait
from typing import Any

_PR_SET_PDEATHSIG = 1


def run_tied(target: Callable[..., None], *args: Any) -> None:
    """Process target: ``target(*args)`` in a child that dies with the service."""
    die_with_parent()
    target(*args)


def die_with_parent() -> None:
    """Arrange for this fork-server child to be killed when the service dies; exit now if it has."""
    released = _release_fork_server()
    parent = os.getppid()
    if _set_parent_death_signal(signal.SIGKILL):
        # The parent may have died between the fork and the prctl: then no signal will ever come.
        if os.getppid() != parent or not _service_alive():
            os._exit(1)
        if released:
            return
    service = multiprocessing.parent_process()
    if service is not None:
        threading.Thread(target=_exit_when_ready, args=(service.sentinel,), daemon=True).start()


def die_with_supervisor() -> None:
    """For a server worker (WORKERS > 1): killed when the supervisor that spawned it dies, however it
    dies, so its own children then go by the chain above."""
    if _set_parent_death_signal(signal.SIGKILL):
        if not _service_alive():  # it died before the prctl took effect
            os._exit(1)
        return
    supervisor = multiprocessing.parent_process()
    if supervisor is not None:
        threading.Thread(target=_exit_when_ready, args=(supervisor.sentinel,), daemon=True).start()


def die_with_spawner(spawner: int) -> None:
    """For a process the service started with ``subprocess`` (a deployment replica, ADR 20): killed
    when the thread that started it ends, however the service dies; exits now if ``spawner`` (the pid
    that started it) is already gone. Where prctl is missing, a thread watches the parent instead."""
    if _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != spawner:  # it died before the prctl took effect: no signal will come
            os._exit(1)
        return
    threading.Thread(target=_exit_when_orphaned, args=(spawner,), daemon=True).start()


def _exit_when_orphaned(spawner: int) -> None:
    while os.getppid() == spawner:
        time.sleep(1.0)
    os._exit(1)


def _release_fork_server() -> bool:
    """Close this child's copy of the fork server's alive pipe, so the fork server exits with the
    service; False when this Python keeps no such copy where we look."""
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if not isinstance(fd, int):
        return False
    with contextlib.suppress(OSError):
        os.close(fd)
    server._forkserver_alive_fd = None  # type: ignore[union-attr]  # a fork server of its own if it wants one
    return True


def _set_parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    return False


def _service_alive() -> bool:
    """Whether the process that asked the fork server for this child is still there."""
    service = multiprocessing.parent_process()
    return service is None or service.is_alive()


def _exit_when_ready(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)
