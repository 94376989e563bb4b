"""The sample data's 2024 quarterly cycle rolls like real futures, read back from PostgreSQL.

Daily bars and statistics of every listed contract are ingested through the real pipeline (sample DBN
bytes, the databento decoder, the database) and queried back; the roll days are computed here from those
rows alone. Volume moves to the next contract first, open interest a few sessions later, both before
expiry, so the volume, open-interest and calendar roll rules (each deciding on the prior session's data)
roll on three different days for every 2024 roll of both roots.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import hdi_lab
from hdi_lab.calendars import sessions
from hdi_lab.core.session import HdiSession

pytestmark = pytest.mark.integration

#: (expiring contract, next contract, expiration day) of each 2024 roll, by root (ids of the sample universe)
ROLLS = {
    "ES": [(400001, 400002, "2024-03-15"), (400002, 400005, "2024-06-21"), (400005, 400006, "2024-09-20")],
    "NQ": [(400003, 400004, "2024-03-15"), (400004, 400007, "2024-06-21"), (400007, 400008, "2024-09-20")],
}
START, END = "2024-01-02", "2024-12-21"
OPEN_INTEREST, CLEARED_VOLUME = 9, 6  # statistics stat_type


def _stored(session: HdiSession, parent: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(volume, close, open interest, cleared volume) per session date (rows) and instrument_id (columns)."""
    for schema in ("definition", "ohlcv-1d", "statistics"):
        report = hdi_lab.ingest(
            provider="sample", schema=schema, symbols=[parent], stype_in="parent", start=START, end=END, session=session
        )
        assert report.quarantined == 0 and report.inserted == report.fetched > 0
    bars = hdi_lab.query("ohlcv-1d", [parent], START, END, session=session)
    bars["session"] = bars.index.date  # a UTC-day bar of a CME session day: the session's date
    volume = bars.pivot(index="session", columns="instrument_id", values="volume")
    close = bars.pivot(index="session", columns="instrument_id", values="close")
    stats = hdi_lab.query("statistics", [parent], START, END, session=session).reset_index()

    def stat(kind: int) -> pd.DataFrame:
        rows = stats[stats["stat_type"] == kind].copy()
        rows["session"] = pd.to_datetime(rows["ts_ref"].astype("int64"), utc=True).dt.date  # the session it is for
        assert not rows.duplicated(["session", "instrument_id"]).any()
        return rows.pivot(index="session", columns="instrument_id", values="quantity")

    return volume, close, stat(OPEN_INTEREST), stat(CLEARED_VOLUME)


def _first_session_over(table: pd.DataFrame, nearest: int, following: int, days: list[dt.date]) -> dt.date:
    """The first of ``days`` on which ``following`` has more than ``nearest``; it keeps more from then on."""
    over = [bool(table.at[d, following] > table.at[d, nearest]) for d in days]
    assert True in over, "never crosses before expiry"
    first = over.index(True)
    assert all(over[first:]), f"crosses back after {days[first]}"
    return days[first]


@pytest.mark.parametrize("root", ["ES", "NQ"])
def test_volume_rolls_before_open_interest_before_the_calendar(session: HdiSession, root: str) -> None:
    volume, close, oi, cleared = _stored(session, f"{root}.FUT")

    # the statistics' cleared volume of a session is that session's daily bar volume
    both = cleared.stack().to_frame("cleared").join(volume.stack().to_frame("bars"), how="inner")
    assert len(both) > 500 and (both["cleared"] == both["bars"]).all()

    cme = [s.date() for s in sessions("CMES", START, END)["session"]]
    tables = {
        rule: hdi_lab.rolls(root, "ohlcv-1d", START, END, roll=rule, session=session)
        for rule in ("volume", "open_interest", "calendar")
    }
    for nearest, following, expiry in ROLLS[root]:
        expires = dt.date.fromisoformat(expiry)
        # sessions until the nearest contract's last full one (expiration day trades until 09:30 New York only)
        window = [s for s in cme if expires - dt.timedelta(days=35) <= s < expires]
        volume_cross = _first_session_over(volume, nearest, following, window)
        oi_cross = _first_session_over(oi, nearest, following, window)
        # each rule decides on the prior session's data: it rolls on the session after the cross (an
        # open-interest rule that waits for the figure's publication, the next morning, one session later);
        # the calendar rule (offset 0) rolls on the session after the last full session: on expiration day
        volume_roll, oi_roll = (cme[cme.index(d) + 1] for d in (volume_cross, oi_cross))
        calendar_roll = cme[cme.index(window[-1]) + 1]
        assert calendar_roll == expires
        assert volume_roll < oi_roll < calendar_roll, (volume_roll, oi_roll, calendar_roll)
        before = {name: len([s for s in cme if d <= s < expires]) for name, d in (("v", volume_roll), ("oi", oi_roll))}
        assert 5 <= before["v"] <= 10 and 3 <= before["oi"] <= 5 and before["v"] >= before["oi"] + 3, before

        # away from the roll the nearest contract holds nearly all of the volume and open interest
        quiet = [s for s in cme if expires - dt.timedelta(days=90) <= s < expires - dt.timedelta(days=24)]
        assert len(quiet) > 30
        for table in (volume, oi):
            assert (table.loc[quiet, nearest] > 10 * table.loc[quiet, following]).all()

        # both contracts close on the session the volume rule decides on, the next one at a carry premium
        front_px, next_px = close.at[volume_cross, nearest], close.at[volume_cross, following]
        assert 0.003 < (next_px - front_px) / front_px < 0.015, (front_px, next_px)

        # hdi_lab's roll rules decide the same days from the same rows (open interest is published the
        # morning after its session: known at the close of the session after the cross, so one session later)
        expected = {"volume": volume_roll, "calendar": calendar_roll, "open_interest": cme[cme.index(oi_roll) + 1]}
        for rule, day in expected.items():
            table = tables[rule]
            at = table[table["from_instrument"] == nearest]
            assert len(at) == 1 and at["to_instrument"].iloc[0] == following, (rule, at)
            assert pd.Timestamp(at["session"].iloc[0]).date() == day, (rule, at["session"].iloc[0], day)
