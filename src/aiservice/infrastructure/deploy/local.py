"""The ``local`` deployment target: each revision's replicas are ``aiservice serve-model`` processes on
this host, sharing one loopback port per revision (ADR 20).

- *One port per revision group.* The deployer reserves a free port on 127.0.0.1 with a socket bound
  with SO_REUSEPORT that never listens; each replica binds the same port with SO_REUSEPORT and listens
  once its model is warm. The kernel spreads new connections evenly over the listening replicas, a
  replica still loading gets none, and the port stays the group's while replicas come and go.
- *Readiness per replica* comes from a port of each replica's own (``local_replicas``): refused while
  it loads, answered once it is warm. ``observe`` counts the replicas that answered.
- *One watcher thread* starts, probes, replaces and stops replicas. It alone starts them, because a
  replica dies with the thread that started it (``PR_SET_PDEATHSIG``), however the service dies.
- *Failures.* A replica that exits (or is not warm within the start timeout) before it was ever ready
  is a failed start; two in a row mark the revision ``failed``, with what the replica said last, and no
  more are started (a model that cannot load would fail the same way forever). A replica that was
  ready and then exits, stops answering its probes (hung), or grows past its memory limit is replaced,
  at once the first time and after a growing pause when it keeps happening.
- *Stopping* is SIGTERM: the replica stops listening (new connections go to its siblings), answers the
  requests it holds, and exits; SIGKILL after the drain time.

Resources: a CPU limit sets the replica's ``MODEL_THREADS`` (its framework's pool) and is otherwise
only recorded; a memory limit is enforced by the watcher on the resident size (RLIMIT_AS would break
frameworks that reserve large virtual ranges: PyTorch, onnxruntime, CUDA).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiservice.application.deploying.ports import ReplicaSpec, RevisionState
from aiservice.domain.deployments import DeploymentTarget
from aiservice.infrastructure.deploy.local_replicas import LocalReplica, ProbeRefused, spawn

if TYPE_CHECKING:
    from aiservice.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_FAILURES_TO_FAIL = 2
CRASH_MEMORY_S = 300.0  # crashes older than this no longer lengthen the pause before a replacement
MAX_PAUSE_S = 30.0


@dataclass
class _Group:
    """The replicas of one deployment revision, on one port."""

    spec: ReplicaSpec
    port: int
    reservation: socket.socket
    replicas: list[LocalReplica] = field(default_factory=list)
    start_failures: int = 0  # failed starts in a row (reset by a replica that gets ready)
    failed: str | None = None
    retiring: bool = False
    crashes: deque[float] = field(default_factory=deque)
    not_before: float = 0.0  # no replacement before this (a pause after repeated crashes)

    @property
    def active(self) -> list[LocalReplica]:
        return [r for r in self.replicas if r.stop_by is None]

    def state(self) -> RevisionState:
        ready = [r for r in self.replicas if r.serving]
        p95s = [r.p95_ms for r in ready if r.p95_ms is not None]
        return RevisionState(
            revision=self.spec.revision,
            desired=self.spec.replicas,
            ready=len(ready),
            endpoint=f"http://{HOST}:{self.port}" if ready else None,
            failed=self.failed,
            in_flight=sum(r.in_flight for r in ready),
            cpu_percent=sum(r.cpu_percent for r in ready) / len(ready) if ready else 0.0,
            p95_ms=max(p95s) if p95s else None,  # the slowest replica's: percentiles do not add up
        )


class LocalDeployer:
    """Replicas as local processes. Building one starts nothing: the watcher thread starts with the
    first ``ensure``, so every process that bootstraps the service may hold one."""

    target = DeploymentTarget.LOCAL
    scales_itself = False  # the reconcile loop's autoscaler sizes local groups

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        command: Sequence[str] = (sys.executable, "-m", "aiservice"),
        start_timeout_s: float = 300.0,
        probe_s: float = 2.0,
        probe_timeout_s: float = 2.0,
        hung_probes: int = 3,
        drain_s: float = 30.0,
    ) -> None:
        """``env``: the replicas' whole environment (the service's settings, ``REPLICA_TOKEN``);
        ``drain_s``: how long a replica stopped by a resize or ``close`` may take to answer what it
        holds (``retire`` says its own)."""
        self._env = dict(env)
        self._command = tuple(command)
        self._start_timeout_s = start_timeout_s
        self._probe_s = probe_s
        self._probe_timeout_s = probe_timeout_s
        self._hung_probes = hung_probes
        self._drain_s = drain_s
        self._groups: dict[tuple[str, int], _Group] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = False  # no more replicas start
        self._finished = False  # the watcher ends (only once no replica it started is left)
        self._watcher: threading.Thread | None = None
        self._probes: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings, token: str) -> LocalDeployer:
        env = settings.child_environment(
            REPLICA_TOKEN=token,
            WORKERS="1",
            # Each replica keeps its metrics in its own process (its /metrics is its own): not in the
            # service's multi-process folder, which would mix them into the service's figures.
            PROMETHEUS_MULTIPROC_DIR=None,
            PROMETHEUS_PORT=None,
        )
        return cls(
            env,
            start_timeout_s=settings.replica_start_timeout_seconds,
            probe_s=settings.replica_probe_seconds,
            probe_timeout_s=settings.replica_probe_timeout_seconds,
            hung_probes=settings.replica_hung_probes,
            drain_s=settings.graceful_shutdown_seconds,
        )

    # -- the Deployer port -----------------------------------------------------------------------

    def ensure(self, spec: ReplicaSpec) -> RevisionState:
        with self._lock:
            if self._closing:
                raise RuntimeError("the local deployer is closed")
            key = (spec.deployment_id, spec.revision)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _new_group(spec)
            group.spec, group.retiring = spec, False
            self._start_watching()
            state = group.state()
        self._wake.set()
        return state

    def observe(self, deployment_id: str, revision: int) -> RevisionState | None:
        with self._lock:
            group = self._groups.get((deployment_id, revision))
            return None if group is None or group.retiring else group.state()

    def retire(self, deployment_id: str, revision: int, drain_s: float) -> None:
        with self._lock:
            group = self._groups.get((deployment_id, revision))
            if group is None:
                return
            group.retiring = True
            for replica in group.replicas:
                replica.stop(drain_s)
        self._wake.set()

    def revisions(self) -> dict[str, list[int]]:
        running: dict[str, list[int]] = {}
        with self._lock:
            for (deployment_id, revision), group in sorted(self._groups.items()):
                if not group.retiring:
                    running.setdefault(deployment_id, []).append(revision)
        return running

    def close(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after the drain time) and the watcher."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            replicas = [r for g in self._groups.values() for r in g.replicas]
            for replica in replicas:
                replica.stop(self._drain_s)
        deadline = time.monotonic() + self._drain_s
        while any(not r.exited for r in replicas) and time.monotonic() < deadline:
            time.sleep(0.05)
        for replica in replicas:
            replica.kill()
            with contextlib.suppress(Exception):
                replica.process.wait(5)
        # Only now may the watcher end: its end would SIGKILL the replicas it started, drained or not.
        self._finished = True
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        with self._lock:
            for group in self._groups.values():
                group.reservation.close()
            self._groups.clear()
        if self._probes is not None:
            self._probes.shutdown(wait=False, cancel_futures=True)

    # -- the watcher -----------------------------------------------------------------------------

    def _start_watching(self) -> None:
        if self._watcher is None:
            self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="replica-probe")
            self._watcher = threading.Thread(target=self._watch, name="local-replicas", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._finished:
            try:
                self._tick()
            except Exception:  # never let the thread end: its end would take every replica with it
                log.exception("local deployer: watching replicas failed; trying again")
            self._wake.wait(self._probe_s)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            if self._closing:
                return
            for key, group in list(self._groups.items()):
                self._reap(group)
                self._enforce_deadlines(group)
                self._scale(group)
                if group.retiring and not group.replicas:
                    group.reservation.close()
                    del self._groups[key]
            watched = [(g, r) for g in self._groups.values() for r in g.replicas if r.stop_by is None]
        assert self._probes is not None
        outcomes = list(self._probes.map(lambda pair: self._probe(*pair), watched))
        if any(outcomes):
            self._wake.set()  # a replica to replace: at once, not after the next pause

    def _reap(self, group: _Group) -> None:
        now = time.monotonic()
        for replica in [r for r in group.replicas if r.exited]:
            group.replicas.remove(replica)
            if replica.stop_by is not None:
                continue  # asked to stop
            why = replica.killed_for or f"exited with status {replica.process.returncode}"
            said = replica.last_words()
            reason = f"{why}: {said}" if said and said not in why else why
            if replica.ready_at is None:
                group.start_failures += 1
                log.warning(
                    "local replica could not start",
                    extra={
                        "deployment": group.spec.deployment,
                        "revision": group.spec.revision,
                        "reason": reason,
                    },
                )
                if group.start_failures >= START_FAILURES_TO_FAIL and group.failed is None:
                    group.failed = f"replicas could not start ({group.start_failures} in a row): {reason}"
                continue
            log.warning(
                "local replica ended; replacing it",
                extra={
                    "deployment": group.spec.deployment,
                    "revision": group.spec.revision,
                    "reason": reason,
                },
            )
            group.crashes.append(now)
            while group.crashes and group.crashes[0] < now - CRASH_MEMORY_S:
                group.crashes.popleft()
            pause = 0.0 if len(group.crashes) <= 1 else min(MAX_PAUSE_S, 2.0 ** (len(group.crashes) - 2))
            group.not_before = now + pause

    def _enforce_deadlines(self, group: _Group) -> None:
        now = time.monotonic()
        for replica in group.replicas:
            if replica.stop_by is not None and now >= replica.stop_by:
                replica.kill()
            elif replica.ready_at is None and now - replica.started > self._start_timeout_s:
                replica.kill(f"not warm within {self._start_timeout_s:g} s")

    def _scale(self, group: _Group) -> None:
        active = group.active
        desired = 0 if group.retiring else group.spec.replicas
        if len(active) > desired:
            # The ones still loading go first, then the newest: the warm, long-lived ones stay.
            ranked = sorted(active, key=lambda r: (r.ready_at is not None, -r.started))
            for replica in ranked[: len(active) - desired]:
                replica.stop(self._drain_s)
            return
        if group.failed is not None or time.monotonic() < group.not_before:
            return
        taken = {r.index for r in group.replicas}
        free = (i for i in range(len(group.replicas) + desired) if i not in taken)
        for _ in range(desired - len(active)):
            group.replicas.append(self._spawn(group.spec, group.port, next(free)))

    def _spawn(self, spec: ReplicaSpec, port: int, index: int) -> LocalReplica:
        env = dict(self._env)
        if spec.cpu_millicores is not None:  # the framework's pool sized to the limit
            env["MODEL_THREADS"] = str(max(1, math.ceil(spec.cpu_millicores / 1000)))
        arguments = [
            "--deployment",
            spec.deployment,
            "--tenant",
            spec.tenant_id,
            "--revision",
            str(spec.revision),
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        replica = spawn(self._command, arguments, index, env)
        log.info(
            "local replica starting",
            extra={
                "deployment": spec.deployment,
                "revision": spec.revision,
                "replica": index,
                "pid": replica.pid,
            },
        )
        return replica

    def _probe(self, group: _Group, replica: LocalReplica) -> bool:
        """Probe and sample one replica; True when it was killed and wants replacing."""
        try:
            replica.probe(self._probe_timeout_s)
        except ProbeRefused:
            if replica.ready_at is not None and not replica.exited:
                return self._missed(group, replica, "stopped listening")
        except (OSError, ValueError) as error:
            if replica.exited:
                return False
            if replica.ready_at is not None:
                return self._missed(group, replica, f"stopped answering its probes ({error})")
        else:
            with self._lock:
                replica.failed_probes = 0
                if replica.ready_at is None:
                    replica.ready_at = time.monotonic()
                    group.start_failures = 0
        resident = replica.sample()
        limit = group.spec.memory_bytes
        if limit is not None and resident > limit:
            replica.kill(f"used {resident} bytes of memory, above its limit of {limit}")
            return True
        return False

    def _missed(self, group: _Group, replica: LocalReplica, why: str) -> bool:
        with self._lock:
            replica.failed_probes += 1
            if replica.failed_probes < self._hung_probes:
                return False
        replica.kill(f"{why} {self._hung_probes} times in a row")
        return True


def _new_group(spec: ReplicaSpec) -> _Group:
    """A group with a port of its own: reserved by a socket that binds it with SO_REUSEPORT (so the
    replicas can bind it too) and never listens (so it takes no connection)."""
    reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((HOST, 0))
    return _Group(spec=spec, port=reservation.getsockname()[1], reservation=reservation)
