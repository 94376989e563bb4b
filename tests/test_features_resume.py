"""The resume decision of feature computations, without a database: when saved states apply at all,
which saved states still hold, and what each instrument's bars read lead to."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from hdi_lab.errors import ValidationError
from hdi_lab.features.bars import HISTORY_START, InstrumentBars
from hdi_lab.features.compute import largest_gap, parse_max_gap
from hdi_lab.features.resume import Action, Decision, decide, states_apply, usable_state, window_start
from hdi_lab.storage.features import StateRow, StoredState

pytestmark = pytest.mark.unit

DAY = 86_400 * 10**9
T0 = pd.Timestamp("2024-01-01", tz="UTC").value
CONTEXT = 3  # bars of history the windows need before the first new bar


def days(*k: int) -> npt.NDArray[Any]:
    """Bar opens (ns) on days ``k`` after T0."""
    return np.array([T0 + i * DAY for i in k], dtype=np.int64)


def state(
    last_day: int,
    bars: int,
    lower_day: int | None,
    values: tuple[float, ...] = (1.0, 2.0, 3.0),
    bars_now: int | None = None,
    iid: int = 7,
) -> StoredState:
    """A saved state after the bar of ``last_day``, the instrument's ``bars``-th; ``bars_now`` stored now."""
    return StoredState(
        StateRow(iid, T0 + last_day * DAY, bars, "AAPL", values),
        bars if bars_now is None else bars_now,
        T0 + lower_day * DAY if lower_day is not None else None,
    )


# -- when states apply ----------------------------------------------------------------------


def test_states_apply_to_resumable_sets_at_stored_intervals_after_the_start_of_history() -> None:
    lo = pd.Timestamp("2024-01-10", tz="UTC")
    assert states_apply(True, "1d", False, lo)
    assert states_apply(True, "1s", False, lo) and states_apply(True, "1m", False, lo)
    assert states_apply(True, "1h", False, lo)


@pytest.mark.parametrize(
    ("resumable", "interval", "max_gap", "lo"),
    [
        (False, "1d", False, pd.Timestamp("2024-01-10", tz="UTC")),  # a set with indicators that cannot resume
        (True, "5m", False, pd.Timestamp("2024-01-10", tz="UTC")),  # rolled up from ohlcv-1m
        (True, "15m", False, pd.Timestamp("2024-01-10", tz="UTC")),
        (True, "1d", True, pd.Timestamp("2024-01-10", tz="UTC")),  # max_gap checks the whole history
        (True, "1d", False, HISTORY_START),  # from the first bar anyway
    ],
)
def test_states_do_not_apply(resumable: bool, interval: str, max_gap: bool, lo: pd.Timestamp) -> None:
    assert not states_apply(resumable, interval, max_gap, lo)


# -- which saved states hold ----------------------------------------------------------------


def test_a_state_whose_bar_count_still_matches_is_usable() -> None:
    s = state(9, 40, 7)
    assert usable_state(s, 3, CONTEXT) is s


@pytest.mark.parametrize(
    "stored",
    [
        state(9, 40, 7, bars_now=45),  # older bars were backfilled
        state(9, 40, 7, bars_now=80),  # several publishers: two rows per bar
        state(9, 40, None),  # no stored bar up to the state's any more
        state(9, 40, 7, values=(1.0, 2.0)),  # another layout of the state
        state(9, 40, 7, values=(1.0, float("nan"), 3.0)),  # saved in warm-up, with more bars than the window
    ],
)
def test_a_state_that_no_longer_holds_is_not_used(stored: StoredState) -> None:
    assert usable_state(stored, 3, CONTEXT) is None


@pytest.mark.parametrize("bars", [1, CONTEXT])
def test_a_state_in_warm_up_is_kept_while_the_whole_history_fits_the_window(bars: int) -> None:
    s = state(9, bars, 10 - bars, values=(float("nan"), 2.0, 3.0))
    assert usable_state(s, 3, CONTEXT) is s


def test_the_window_read_starts_at_the_earliest_last_context_bars() -> None:
    assert window_start([state(9, 40, 7), state(9, 40, 4, iid=8), state(9, 40, 6, iid=9)]) == pd.Timestamp(
        T0 + 4 * DAY, tz="UTC"
    )


# -- what each instrument's bars lead to ----------------------------------------------------


@pytest.mark.parametrize("whole_history", [True, False])
def test_no_bar_in_the_range_is_nothing_to_do(whole_history: bool) -> None:
    assert decide(days(1, 2, 3), T0 + 4 * DAY, state(3, 40, 1), CONTEXT, whole_history) == Decision(Action.NOTHING)
    assert decide(days(), T0, None, CONTEXT, whole_history) == Decision(Action.NOTHING)


def test_a_whole_history_read_is_computed_from_the_first_bar() -> None:
    assert decide(days(0, 1, 2, 3, 4), T0 + 3 * DAY, None, CONTEXT, True) == Decision(Action.FROM_FIRST_BAR, 0, 3)
    # lo between bars: rows from the first bar opening at or after it
    assert decide(days(0, 2, 4), T0 + 3 * DAY, None, CONTEXT, True) == Decision(Action.FROM_FIRST_BAR, 0, 2)
    assert decide(days(5, 6), T0, None, CONTEXT, True) == Decision(Action.FROM_FIRST_BAR, 0, 0)


def test_a_state_saved_after_the_bar_before_lo_resumes_with_the_context_bars() -> None:
    ts = days(5, 6, 7, 8, 9)  # the window read: the last 3 bars before lo (day 8) and the new ones
    assert decide(ts, T0 + 8 * DAY, state(7, 40, 5), CONTEXT, False) == Decision(Action.RESUME, 0, 3)
    # several new bars; the window read starts earlier for another instrument: more bars before lo
    ts = days(2, 3, 4, 5, 6, 7, 8, 9, 10)
    assert decide(ts, T0 + 8 * DAY, state(7, 40, 5), CONTEXT, False) == Decision(Action.RESUME, 3, 6)


def test_without_a_usable_state_the_history_is_read() -> None:
    assert decide(days(5, 6, 7, 8), T0 + 8 * DAY, None, CONTEXT, False) == Decision(Action.READ_HISTORY)


def test_a_window_read_without_bars_before_lo_reads_the_history() -> None:
    assert decide(days(8, 9), T0 + 8 * DAY, state(7, 40, 5), CONTEXT, False) == Decision(Action.READ_HISTORY)


def test_a_bar_stored_between_the_state_and_lo_reads_the_history() -> None:
    # the state is after day 6; day 7 was stored since (or lo skips it: a re-run of the past)
    ts = days(4, 5, 6, 7, 8)
    assert decide(ts, T0 + 8 * DAY, state(6, 40, 4), CONTEXT, False) == Decision(Action.READ_HISTORY)


def test_a_window_read_missing_bars_the_state_was_saved_after_reads_the_history() -> None:
    # day 6 is stored (counted by the state) but not read (a continuous symbol mapped elsewhere that day)
    ts = days(5, 7, 8)
    assert decide(ts, T0 + 8 * DAY, state(7, 40, 5), CONTEXT, False) == Decision(Action.READ_HISTORY)


def test_a_short_history_inside_the_window_is_computed_from_its_first_bar() -> None:
    # two bars stored before lo (fewer than the context): the window read holds all of them
    assert decide(days(6, 7, 8), T0 + 8 * DAY, state(7, 2, 6), CONTEXT, False) == Decision(Action.FROM_FIRST_BAR, 0, 2)
    # exactly the context: still from the first bar (nothing to resume before the window)
    assert decide(days(5, 6, 7, 8), T0 + 8 * DAY, state(7, CONTEXT, 5), CONTEXT, False) == Decision(
        Action.FROM_FIRST_BAR, 0, 3
    )


def test_a_short_history_with_other_bars_read_before_it_reads_the_history() -> None:
    # the state counts 2 bars from day 6, but the read holds one more before them
    assert decide(days(4, 6, 7, 8), T0 + 8 * DAY, state(7, 2, 6), CONTEXT, False) == Decision(Action.READ_HISTORY)


# -- gaps -----------------------------------------------------------------------------------


def bars_at(ts: npt.NDArray[Any]) -> InstrumentBars:
    return InstrumentBars(500001, "AAPL", pd.DataFrame({"close": np.ones(len(ts))}, index=pd.to_datetime(ts, utc=True)))


def test_the_largest_gap_is_measured_and_can_be_refused() -> None:
    assert largest_gap(bars_at(days(1)), None) == 0
    assert largest_gap(bars_at(days(1, 2, 6, 7)), None) == 4 * DAY
    assert largest_gap(bars_at(days(1, 2, 6, 7)), pd.Timedelta(days=4)) == 4 * DAY
    with pytest.raises(
        ValidationError,
        match=r"instrument 500001 \(AAPL\) has no bars between 2024-01-03 "
        r"00:00:00\+00:00 and 2024-01-07 00:00:00\+00:00.*max_gap=3 days",
    ):
        largest_gap(bars_at(days(1, 2, 6, 7)), pd.Timedelta(days=3))


@pytest.mark.parametrize("bad", ["0D", "-1h", "soon", None])
def test_max_gap_is_a_positive_duration(bad: object) -> None:
    assert parse_max_gap("4D") == pd.Timedelta(days=4)
    with pytest.raises(ValidationError, match="is not a positive duration"):
        parse_max_gap(bad)  # type: ignore[arg-type]
