"""Exchange calendars live in the leaf :mod:`hdi_lab.calendars` (so providers may use them too: the sample
provider follows them); this path, which core and the front ends use, keeps working."""

from __future__ import annotations

from hdi_lab.calendars import (
    DATASET_CALENDARS,
    FIRST_SESSION,
    IB_EXCHANGE_CALENDARS,
    DateLike,
    TimeLike,
    calendar_for,
    minutes,
    open_minutes,
    session_of,
    sessions,
    sessions_of,
)

__all__ = [
    "DATASET_CALENDARS",
    "FIRST_SESSION",
    "IB_EXCHANGE_CALENDARS",
    "DateLike",
    "TimeLike",
    "calendar_for",
    "minutes",
    "open_minutes",
    "session_of",
    "sessions",
    "sessions_of",
]
