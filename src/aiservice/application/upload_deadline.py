"""The longest an upload may take: past it the bytes are refused, so any staging file older than that
is certainly abandoned and the sweeper of leftovers may remove it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiservice.domain.errors import UploadTimedOut


@dataclass(frozen=True)
class UploadDeadline:
    timeout_s: float = math.inf  # UPLOAD_TIMEOUT_SECONDS
    started: float = field(default_factory=time.monotonic)

    def check(self, abort: Callable[[], None]) -> None:
        """Once the upload has taken longer than allowed: ``abort`` it, and raise ``UploadTimedOut``."""
        if time.monotonic() - self.started > self.timeout_s:
            abort()
            raise UploadTimedOut(
                f"The upload took longer than the {self.timeout_s:g} s allowed; nothing was kept.",
                extra={"limitSeconds": self.timeout_s},
            )
