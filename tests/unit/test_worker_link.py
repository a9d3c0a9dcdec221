"""The pieces several workers of one host share: slots held by file locks, and the datagram link."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from aiservice.application.artifact_keys import InFlightKeys
from aiservice.application.ports import CloudEvent, PeerAnswer
from aiservice.application.serving.fleet import WorkerFleet
from aiservice.infrastructure.workers.peers import UnixPeers
from aiservice.infrastructure.workers.slots import NoFreeSlot, WorkerSlot, hold_supervisor_lock


def test_workers_take_the_lowest_free_slots_and_a_freed_slot_is_taken_again(tmp_path: Path) -> None:
    first, second = WorkerSlot.claim(tmp_path, 2), WorkerSlot.claim(tmp_path, 2)
    assert (first.index, second.index, first.host, second.host) == (0, 1, True, False)
    with pytest.raises(NoFreeSlot):
        WorkerSlot.claim(tmp_path, 2, wait_s=0.2)
    first.release()  # as the kernel does when the host worker dies
    replacement = WorkerSlot.claim(tmp_path, 2, wait_s=0.2)
    assert replacement.index == 0
    replacement.release()
    second.release()


def test_a_slot_held_by_a_process_frees_when_that_process_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from aiservice.infrastructure.workers.slots import WorkerSlot; "
            f"held = WorkerSlot.claim(Path({str(tmp_path)!r}), 1); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(NoFreeSlot):
            WorkerSlot.claim(tmp_path, 1, wait_s=0.2)
        holder.kill()
        holder.wait()
        WorkerSlot.claim(tmp_path, 1, wait_s=5).release()
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_one_supervisor_per_workers_folder(tmp_path: Path) -> None:
    held = hold_supervisor_lock(tmp_path)
    with pytest.raises(BlockingIOError):
        hold_supervisor_lock(tmp_path)
    held.close()
    hold_supervisor_lock(tmp_path).close()


EVENT = CloudEvent(
    id="evt-1",
    source="/aiservice/test",
    type="ai.model.stage_changed.v1",
    subject="model-1",
    time=datetime(2026, 12, 6, tzinfo=UTC),
    tenant_id="acme",
    data={"version": 2, "to_stage": "production"},
    family="model",
    name="model.stage_changed",
)


class Worker:
    """One side of the link with what it received."""

    def __init__(self, folder: Path, slot: int, count: int, refuse: bool = False) -> None:
        self.peers = UnixPeers(folder, slot, count)
        self.events: list[CloudEvent] = []
        self.wakes = 0
        self.received = threading.Event()
        self.refuse = refuse

    def start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.peers.start(loop, on_event=self._event, on_wake=self._wake, on_ask=self._ask)

    def _event(self, event: CloudEvent) -> None:
        self.events.append(event)
        self.received.set()

    def _wake(self) -> None:
        self.wakes += 1
        self.received.set()

    async def _ask(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise RuntimeError("no room for it here")
        return {"op": op, "slot": self.peers.slot, **args}


@asynccontextmanager
async def three(folder: Path) -> AsyncIterator[list[Worker]]:
    workers = [Worker(folder, slot, 3, refuse=slot == 2) for slot in range(3)]
    loop = asyncio.get_running_loop()
    for worker in workers:
        worker.start(loop)
    try:
        yield workers
    finally:
        for worker in workers:
            worker.peers.stop()


def test_an_event_reaches_every_other_worker_and_a_wake_reaches_only_the_host(tmp_path: Path) -> None:
    asyncio.run(_event_and_wake(tmp_path))


async def _event_and_wake(folder: Path) -> None:
    async with three(folder) as workers:
        await _check_event_and_wake(*workers)


async def _check_event_and_wake(host: Worker, second: Worker, third: Worker) -> None:
    host.peers.publish(EVENT)
    for worker in (second, third):
        assert await asyncio.to_thread(worker.received.wait, 5)
        assert worker.events == [EVENT]
    assert host.events == []
    third.peers.wake_host()
    assert await asyncio.to_thread(host.received.wait, 5)
    assert (host.wakes, second.wakes, third.wakes) == (1, 0, 0)
    host.peers.wake_host()  # the host does not wake itself
    await asyncio.sleep(0.1)
    assert host.wakes == 1


def test_an_ask_collects_one_answer_per_worker_with_refusals_named(tmp_path: Path) -> None:
    async def ask() -> list[PeerAnswer]:
        async with three(tmp_path) as workers:
            return await workers[1].peers.ask("load", {"model": "m"}, timeout_s=5)

    answers = asyncio.run(ask())
    assert [(a.worker, a.answered, a.error) for a in answers] == [
        (0, True, None),
        (2, True, "no room for it here"),
    ]
    assert answers[0].result == {"op": "load", "slot": 0, "model": "m"}
    assert answers[0].pid is not None


def test_a_worker_that_is_not_running_is_reported_not_waited_for(tmp_path: Path) -> None:
    asyncio.run(_ask_alone(tmp_path))


async def _ask_alone(tmp_path: Path) -> None:
    alone = Worker(tmp_path, 0, 2)
    alone.start(asyncio.get_running_loop())
    try:
        started = asyncio.get_running_loop().time()
        (answer,) = await alone.peers.ask("status", {}, timeout_s=30)
        assert (answer.worker, answer.answered, answer.error) == (1, False, "not running")
        assert asyncio.get_running_loop().time() - started < 1
    finally:
        alone.peers.stop()


def test_a_worker_without_an_event_loop_says_so(tmp_path: Path) -> None:
    asyncio.run(_ask_deaf(tmp_path))


async def _ask_deaf(tmp_path: Path) -> None:
    asking, deaf = Worker(tmp_path, 0, 2), Worker(tmp_path, 1, 2)
    asking.start(asyncio.get_running_loop())
    deaf.start(None)  # bound, but serves no requests: it says so
    try:
        (answer,) = await asking.peers.ask("status", {}, timeout_s=5)
        assert (answer.worker, answer.answered, answer.error) == (1, True, "this worker serves no requests")
    finally:
        asking.peers.stop()
        deaf.peers.stop()


def test_the_host_hears_which_keys_its_siblings_are_writing(tmp_path: Path) -> None:
    """The host worker's sweeper must not take another worker's upload under inspection for an
    orphan; a sibling that cannot say stops the orphan sweep instead of risking it."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writing = InFlightKeys()
        writing.hold("acme/model/key")
        host = WorkerFleet(cast(Any, None), UnixPeers(tmp_path, 0, 3))
        sibling = WorkerFleet(cast(Any, None), UnixPeers(tmp_path, 1, 3), in_flight=writing)
        deaf = UnixPeers(tmp_path, 2, 3)
        for fleet in (host, sibling):
            fleet._peers.start(loop, on_event=lambda e: None, on_wake=lambda: None, on_ask=fleet.handle)
        try:  # slot 2 is not running: nothing of its can be in flight
            assert await asyncio.to_thread(host.siblings_in_flight) == {"acme/model/key"}
            deaf.start(None, on_event=lambda e: None, on_wake=lambda: None, on_ask=host.handle)
            with pytest.raises(RuntimeError, match="worker 2"):
                await asyncio.to_thread(host.siblings_in_flight)
        finally:
            for peers in (host._peers, sibling._peers, deaf):
                peers.stop()

    asyncio.run(scenario())
