"""An upload in progress: the bytes stream into a writer, under a deadline, while its key is held in
flight so the leftovers sweeper never takes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiservice.application.artifact_keys import InFlightKeys
from aiservice.application.ports import ArtifactWriter
from aiservice.application.upload_deadline import UploadDeadline
from aiservice.domain.tenancy import Principal


@dataclass
class VersionUpload:
    """An upload in progress: the model it is for and the writer its bytes stream into. Its key is
    held in flight (never swept) until it is recorded or aborted; bytes past the deadline are refused."""

    principal: Principal
    model_id: str
    key: str
    writer: ArtifactWriter
    deadline: UploadDeadline = field(default_factory=UploadDeadline)
    in_flight: InFlightKeys | None = None

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_all([chunk])

    def write_all(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Write buffered chunks in one call, so a caller on an event loop hops to a thread once."""
        self.check_deadline()
        for chunk in chunks:
            self.writer.write(chunk)

    def abort(self) -> None:
        self.writer.abort()
        self.done()

    def done(self) -> None:
        """The key is recorded on a version or its bytes are gone: the sweeper may judge it now."""
        if self.in_flight is not None:
            self.in_flight.release(self.key)
            self.in_flight = None

    def check_deadline(self) -> None:
        """Past the deadline: ``UploadTimedOut``, and the bytes staged so far go."""
        self.deadline.check(self.abort)
