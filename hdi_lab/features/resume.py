"""The resume decision: whether an instrument continues from its saved indicator state, is computed
from its first bar out of the bars read, or needs its whole history read -- pure functions of what
the state table, the bar table and the bars read say (no database).

A state is saved after an instrument's last computed bar with the count of its bars up to it
(:class:`hdi_lab.storage.features.StateRow`). A computation of ``[lo, hi)`` first reads, for every
instrument with a usable state (:func:`usable_state`), only its last ``context`` bars before
``lo`` and the new ones (:func:`window_start`), then :func:`decide` sorts each instrument.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from hdi_lab.features.bars import HISTORY_START, STORED
from hdi_lab.storage.features import StoredState

__all__ = ["Action", "Decision", "decide", "states_apply", "usable_state", "window_start"]


class Action(enum.Enum):
    NOTHING = "no bar in [lo, hi): nothing to compute"
    RESUME = "continue from the saved state"
    FROM_FIRST_BAR = "compute from the instrument's first bar, out of the bars read"
    READ_HISTORY = "read the instrument's whole history, then compute from its first bar"


@dataclass(frozen=True)
class Decision:
    """What to do with one instrument's bars read.

    ``begin``: the first bar read that the computation takes (RESUME: the ``context`` bars before
    ``first``; FROM_FIRST_BAR: 0); ``first``: the first bar in ``[lo, hi)``, from which rows are stored.
    """

    action: Action
    begin: int = 0
    first: int = 0


def states_apply(resumable: bool, interval: str, max_gap_given: bool, lo: pd.Timestamp) -> bool:
    """Whether saved states may be used at all: a set whose indicators all resume, a stored interval
    (rolled-up buckets are final only once all their minutes are stored), no ``max_gap`` (it checks
    the whole history) and a ``lo`` after the start of history (else everything is computed anyway)."""
    return resumable and interval in STORED and not max_gap_given and lo > HISTORY_START


def usable_state(stored: StoredState, layout_size: int, context: int) -> StoredState | None:
    """The saved state if it still holds for the stored bars, else None: the instrument must have as
    many stored bars up to the state's bar as when it was saved (a backfill of older bars, or
    several rows per bar from several publishers, changes the count), the state must have this
    hdi_lab's layout, and be defined (out of warm-up) unless the instrument's whole history fits in
    the ``context`` bars read anyway (it is then computed from its first bar)."""
    saved = stored.saved
    if stored.bars_now != saved.bars or stored.lower_ns is None or len(saved.state) != layout_size:
        return None
    if saved.bars > context and any(math.isnan(v) for v in saved.state):
        return None
    return stored


def window_start(usable: Iterable[StoredState]) -> pd.Timestamp:
    """Where the window read starts: the earliest start of the usable states' last ``context`` bars."""
    return pd.Timestamp(min(s.lower_ns for s in usable if s.lower_ns is not None), tz="UTC")


def decide(
    ts: npt.NDArray[np.int64], lo_ns: int, usable: StoredState | None, context: int, whole_history: bool
) -> Decision:
    """What to do with an instrument whose bars read open at ``ts`` (ns, ascending, one per bar).

    ``whole_history``: the read holds every stored bar before ``hi`` (no state applies or it was
    read because none did); else it is the window read from :func:`window_start`, and ``usable``
    the instrument's state if :func:`usable_state` kept it.
    """
    first = int(np.searchsorted(ts, lo_ns))
    if first == len(ts):
        return Decision(Action.NOTHING)
    if whole_history:
        return Decision(Action.FROM_FIRST_BAR, 0, first)
    before = ts[:first]
    saved, lower_ns = (usable.saved, usable.lower_ns) if usable is not None else (None, None)
    if saved is None or lower_ns is None or len(before) == 0 or int(before[-1]) != saved.ts_ns:
        return Decision(Action.READ_HISTORY)  # no state, or a bar stored between the state's bar and lo
    if int((before >= lower_ns).sum()) != min(context, saved.bars):
        return Decision(Action.READ_HISTORY)  # the window read does not hold the bars the state was saved after
    if saved.bars > context:
        return Decision(Action.RESUME, first - context, first)
    if len(before) == saved.bars:  # its whole history is in the window: computed from its first bar
        return Decision(Action.FROM_FIRST_BAR, 0, first)
    return Decision(Action.READ_HISTORY)
