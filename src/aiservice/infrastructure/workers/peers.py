"""The other worker processes of one ``aiservice serve``, reached by Unix datagrams on this host.

Each worker binds an abstract-namespace datagram socket named after the shared workers folder and its
slot, so there is no file to clean up and no path-length limit. Datagrams between local processes are
neither lost nor reordered; a peer that is not there (restarting) is skipped, and an ask reports it as
not answering. No broker is needed for what only this host's workers must hear: events for their
caches, the host worker's relay wake-up, and operator requests such as loading a model everywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from aiservice.application.ports import CloudEvent, PeerAnswer
from aiservice.infrastructure.events.base import decode, encode

log = logging.getLogger(__name__)

MAX_DATAGRAM = 60_000  # well inside Linux's default socket buffers; events and answers are small
HOST_SLOT = 0

EventHandler = Callable[[CloudEvent], object]
AskHandler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def _address(folder: Path, slot: int) -> bytes:
    digest = hashlib.blake2b(str(folder.resolve()).encode(), digest_size=8).hexdigest()
    return f"\0aiservice-{digest}-w{slot}".encode()


class UnixPeers:
    """This worker's link to its siblings (slots ``0..count-1``; slot 0 holds the host's duties). With
    ``count`` 1 it binds nothing and every call is a no-op: the single worker has no siblings."""

    def __init__(self, folder: Path, slot: int, count: int) -> None:
        self.slot = slot
        self.count = count
        self._folder = folder
        self._inbox: socket.socket | None = None
        self._outbox: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[str, _Ask] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: EventHandler | None = None
        self._on_wake: Callable[[], object] | None = None
        self._on_ask: AskHandler | None = None
        self._thread: threading.Thread | None = None

    @property
    def others(self) -> list[int]:
        return [slot for slot in range(self.count) if slot != self.slot]

    def start(
        self,
        loop: asyncio.AbstractEventLoop | None,
        *,
        on_event: EventHandler,
        on_wake: Callable[[], object],
        on_ask: AskHandler,
    ) -> None:
        self._loop, self._on_event, self._on_wake, self._on_ask = loop, on_event, on_wake, on_ask
        if self.count == 1:
            return  # a single worker has nobody to hear from
        self._outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._outbox.settimeout(1.0)  # a peer whose buffer is full gets a second, then is skipped
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.bind(_address(self._folder, self.slot))
        self._inbox = inbox
        self._thread = threading.Thread(target=self._receive, name=f"peers-w{self.slot}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            with contextlib.suppress(OSError):
                inbox.shutdown(socket.SHUT_RDWR)
            inbox.close()
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()

    # -- sending ---------------------------------------------------------------------------------

    def publish(self, event: CloudEvent) -> None:
        """Hand an event to every other worker (each handles it as its own consumer)."""
        message = orjson.dumps({"t": "event", "e": encode(event).decode()})
        for slot in self.others:
            self._send(slot, message)

    def wake_host(self) -> None:
        """Tell the host worker's relay that events were committed, so it need not wait for its poll."""
        if self.slot != HOST_SLOT:
            self._send(HOST_SLOT, b'{"t":"wake"}')

    async def ask(self, op: str, args: dict[str, Any], timeout_s: float) -> list[PeerAnswer]:
        """Ask every other worker to run ``op``; one answer per worker, ``answered=False`` for silence."""
        ident = uuid.uuid4().hex
        pending = self._pending[ident] = _Ask(asyncio.get_running_loop().create_future(), len(self.others))
        message = orjson.dumps({"t": "ask", "id": ident, "from": self.slot, "op": op, "args": args})
        unreachable = [slot for slot in self.others if not self._send(slot, message)]
        pending.expect(len(self.others) - len(unreachable))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pending.done), timeout_s)
        finally:
            self._pending.pop(ident, None)
        heard = {a.worker for a in pending.answers}
        silent = [
            PeerAnswer(
                slot, None, False, {}, "not running" if slot in unreachable else "did not answer in time"
            )
            for slot in self.others
            if slot not in heard
        ]
        return sorted([*pending.answers, *silent], key=lambda a: a.worker)

    def ask_from_thread(self, op: str, args: dict[str, Any], timeout_s: float) -> list[PeerAnswer]:
        """``ask`` for a thread other than the serving loop's (the sweeper's)."""
        loop = self._loop
        if self.count == 1 or loop is None or loop.is_closed():
            return []
        return asyncio.run_coroutine_threadsafe(self.ask(op, args, timeout_s), loop).result(timeout_s + 5)

    def _send(self, slot: int, message: bytes) -> bool:
        if len(message) > MAX_DATAGRAM:
            log.warning("a %d-byte message to worker %d is too large to send", len(message), slot)
            return False
        outbox = self._outbox
        if outbox is None:
            return False  # not started, or stopped
        try:
            with self._send_lock:
                outbox.sendto(message, _address(self._folder, slot))
        except (ConnectionRefusedError, FileNotFoundError):
            return False  # that worker is not running now (starting or being replaced)
        except OSError as exc:
            log.warning("could not reach worker %d: %s", slot, exc)
            return False
        return True

    # -- receiving -------------------------------------------------------------------------------

    def _receive(self) -> None:
        while (inbox := self._inbox) is not None:
            try:
                data = inbox.recv(MAX_DATAGRAM + 1)
            except OSError:
                return  # closed by stop()
            if not data:
                return
            try:
                self._dispatch(orjson.loads(data))
            except Exception:
                log.exception("worker %d could not handle a message from a sibling", self.slot)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "event" and self._on_event is not None:
            self._on_event(decode(message["e"]))
        elif kind == "wake" and self._on_wake is not None:
            self._on_wake()
        elif kind == "ask":
            self._answer(message)
        elif kind == "reply":
            self._collect(message)

    def _answer(self, message: dict[str, Any]) -> None:
        loop, handler = self._loop, self._on_ask
        reply_to = int(message["from"])

        def reply(ok: bool, result: dict[str, Any], error: str | None) -> None:
            body = {"t": "reply", "id": message["id"], "worker": self.slot, "pid": os.getpid()}
            self._send(reply_to, orjson.dumps(body | {"ok": ok, "result": result, "error": error}))

        if loop is None or handler is None or loop.is_closed():
            reply(False, {}, "this worker serves no requests")
            return

        def finished(future: concurrent.futures.Future[dict[str, Any]]) -> None:
            if future.cancelled():  # the loop stopped under it: this worker is stopping
                reply(False, {}, "this worker is stopping")
                return
            error = future.exception()
            if error is None:
                reply(True, future.result(), None)
            else:
                reply(False, {}, str(getattr(error, "detail", None) or error))

        try:
            future = asyncio.run_coroutine_threadsafe(handler(message["op"], message["args"]), loop)
        except RuntimeError:  # the loop closed in between: this worker is stopping
            reply(False, {}, "this worker is stopping")
            return
        future.add_done_callback(finished)

    def _collect(self, message: dict[str, Any]) -> None:
        loop = self._loop
        pending = self._pending.get(message["id"])
        if pending is None or loop is None:
            return  # an answer that came after its ask gave up
        error = None if message["ok"] else str(message["error"])
        answer = PeerAnswer(int(message["worker"]), message.get("pid"), True, message["result"], error)
        loop.call_soon_threadsafe(pending.add, answer)


class _Ask:
    """One question to the siblings: done once every reachable one answered."""

    def __init__(self, done: asyncio.Future[None], expected: int) -> None:
        self.done = done
        self.answers: list[PeerAnswer] = []
        self._expected = expected

    def expect(self, count: int) -> None:
        self._expected = count
        self._check()

    def add(self, answer: PeerAnswer) -> None:
        if all(a.worker != answer.worker for a in self.answers):
            self.answers.append(answer)
        self._check()

    def _check(self) -> None:
        if len(self.answers) >= self._expected and not self.done.done():
            self.done.set_result(None)
