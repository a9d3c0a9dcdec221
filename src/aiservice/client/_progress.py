"""Progress bars with Rich (a dependency already), which draws in a terminal and in a Jupyter notebook."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any


class Bar:
    """``with Bar(total, "Uploading", bytes_=True) as bar: bar.advance(n)``; a disabled bar draws nothing.
    Safe to advance from several threads."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, bytes_: bool = False) -> None:
        self.total = total
        self.description = description
        self.enabled = enabled
        self.bytes = bytes_
        self._progress: Any = None
        self._task: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> Bar:
        if not self.enabled:
            return self
        from rich import progress

        columns: list[Any] = [
            progress.TextColumn("{task.description}"),
            progress.BarColumn(),
            progress.TaskProgressColumn(),
        ]
        if self.bytes:
            columns += [progress.DownloadColumn(), progress.TransferSpeedColumn()]
        else:
            columns += [progress.MofNCompleteColumn()]
        columns.append(progress.TimeRemainingColumn())
        self._progress = progress.Progress(*columns)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            with self._lock:
                self._progress.update(self._task, advance=amount)

    def reset(self) -> None:
        """Back to zero (a retried upload sends its bytes again)."""
        if self._progress is not None:
            with self._lock:
                self._progress.reset(self._task, total=self.total)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
