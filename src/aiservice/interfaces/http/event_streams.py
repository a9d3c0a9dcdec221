"""What the Server-Sent Events endpoints (a training job's progress, an AutoML study's leaderboard) share."""

from __future__ import annotations

MAX_EVENT_NUMBER = 2**31 - 1  # event numbers are 32-bit in the database


def resume_after(last_event_id: str | None) -> int:
    """The event number a reconnecting client saw last (``Last-Event-ID``); anything but ASCII digits
    means from the start, and a number past every event means nothing is replayed."""
    text = (last_event_id or "").strip()
    if not (text.isascii() and text.isdigit()):
        return 0
    return MAX_EVENT_NUMBER if len(text) > 10 else min(int(text), MAX_EVENT_NUMBER)  # int() caps digits
