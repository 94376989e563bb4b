"""What :mod:`hdi_lab.core.gaps` asks the database: the time ranges completed ingests covered, and the rows stored
per instrument and session window: bars summed from the bar counts kept at ingest (:mod:`hdi_lab.storage.counts`)
where they can be trusted, anything else counted in the database (one index range scan per window)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.extensions

from hdi_lab.storage import counts
from hdi_lab.storage.cursor import quote, transaction

__all__ = ["bars", "covered", "present"]


def covered(
    conn: psycopg2.extensions.connection,
    schema: str,
    *,
    data_schema: str,
    stype_in: str,
    symbols: Sequence[str],
    dataset: str | None,
) -> pd.DataFrame:
    """The time completed ingests of ``data_schema`` covered per requested symbol (of ``stype_in``, in ``dataset``
    or any), overlapping and touching ranges merged: columns ``symbol``, ``dataset``, ``start``, ``end`` (UTC, the
    end exclusive), by symbol and start. An ingest is logged when its chunk completed, so every logged range is
    covered. Merged in the database per logged symbol list (``range_agg``, PostgreSQL 14+), then across lists:
    years of daily chunks come back as a few rows.

    Raises StorageError when the database fails."""
    wanted = set(symbols)
    with transaction(conn) as cur:
        log = quote(conn, schema, "ingest_log")
        # merged per logged symbol list first (a subscription logs the same list chunk after chunk), never per
        # symbol of each chunk: years of 100-symbol daily chunks are a few ranges, not 180k unnested rows
        cur.execute(
            "SELECT g.symbols, g.dataset, lower(r), upper(r) FROM ("
            "SELECT l.symbols, l.dataset, range_agg(tstzrange(l.start_ts, l.end_ts)) AS m "
            f"FROM {log} l WHERE l.schema = %s AND l.stype_in = %s AND l.symbols && %s::text[] "
            "AND (%s::text IS NULL OR l.dataset = %s) GROUP BY 1, 2) g CROSS JOIN LATERAL unnest(g.m) AS r",
            (data_schema, stype_in, list(symbols), dataset, dataset),
        )
        rows = cur.fetchall()
    ranges: dict[tuple[str, str], list[tuple[dt.datetime, dt.datetime]]] = {}
    for syms, ds, lo, hi in rows:
        for sym in set(syms) & wanted:
            ranges.setdefault((sym, ds), []).append((lo, hi))
    merged = []
    for (sym, ds), spans in sorted(ranges.items()):
        spans.sort()
        cur_lo, cur_hi = spans[0]
        for lo, hi in spans[1:]:
            if lo <= cur_hi:  # overlapping or touching
                cur_hi = max(cur_hi, hi)
            else:
                merged.append((sym, ds, cur_lo, cur_hi))
                cur_lo, cur_hi = lo, hi
        merged.append((sym, ds, cur_lo, cur_hi))
    frame = pd.DataFrame(merged, columns=["symbol", "dataset", "start", "end"])
    for col in ("start", "end"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def present(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: str,
    instrument_ids: npt.NDArray[np.int64],
    opens: npt.NDArray[np.int64],
    closes: npt.NDArray[np.int64],
    *,
    exists_only: bool = False,
) -> npt.NDArray[np.int64]:
    """The rows of ``table`` stored for each window: instrument ``instrument_ids[i]``, ``ts_event`` in
    ``[opens[i], closes[i])`` (int64 ns UTC, whole seconds). ``exists_only`` stops at the first row (1 or 0),
    for tables where only presence matters (ticks: millions of rows a session).

    Raises StorageError when the database fails."""
    if len(instrument_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    with transaction(conn) as cur:
        return _exact(cur, schema, table, instrument_ids, opens, closes, exists_only)


def _exact(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    instrument_ids: npt.NDArray[np.int64],
    opens: npt.NDArray[np.int64],
    closes: npt.NDArray[np.int64],
    exists_only: bool,
) -> npt.NDArray[np.int64]:
    t = quote(cur.connection, schema, table)
    limit = " LIMIT 1" if exists_only else ""
    # one index range scan of (instrument_id, ts_event) per window; the windows come back in their order
    cur.execute(
        f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {t} b WHERE b.instrument_id = u.iid "
        f"AND b.ts_event >= to_timestamp(u.lo) AND b.ts_event < to_timestamp(u.hi){limit}) x) "
        "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY AS u(iid, lo, hi, n) ORDER BY u.n",
        (instrument_ids.tolist(), (opens // 1_000_000_000).tolist(), (closes // 1_000_000_000).tolist()),
    )
    return np.array([r[0] for r in cur.fetchall()], dtype=np.int64)


def bars(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: str,
    instrument_ids: npt.NDArray[np.int64],
    opens: npt.NDArray[np.int64],
    closes: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """The bars of bar ``table`` stored in each window, as :func:`present` counts them: summed from the bar
    counts for windows aligned to their buckets (:data:`~hdi_lab.storage.counts.BUCKET_SECONDS`), counted in
    the table for the others, and for all windows while the table's counts are stale or, under a TimescaleDB
    retention policy, for windows opening before its horizon (see :func:`hdi_lab.storage.counts.trust`).

    Raises StorageError when the database fails."""
    n = len(instrument_ids)
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    step = counts.BUCKET_SECONDS * 1_000_000_000
    with transaction(conn) as cur:
        trust = counts.trust(cur, schema, table)
        use = (opens % step == 0) & (closes % step == 0) & (closes >= opens) & (not trust.stale)
        if trust.horizon is not None:
            use &= opens >= trust.horizon
        if use.any():
            out[use] = _summed(cur, schema, table, instrument_ids[use], opens[use] // step, closes[use] // step)
        if not use.all():
            rest = ~use
            out[rest] = _exact(cur, schema, table, instrument_ids[rest], opens[rest], closes[rest], False)
    return out


def _summed(
    cur: psycopg2.extensions.cursor,
    schema: str,
    table: str,
    instrument_ids: npt.NDArray[np.int64],
    first: npt.NDArray[np.int64],
    end: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """The bars in buckets ``[first, end)`` (bucket numbers since 1970) of each instrument, from one read of
    their count rows: the rows in (instrument, day) order are one run of buckets, in which a window is the
    stretch from its first bucket to its end (a missing row holds no bar, so the stretch skips it)."""
    per_day = counts.BUCKETS
    lo_day, hi_day = int(first.min() // per_day), int(end.max() // per_day)
    ids, days, rows = counts.read(cur, schema, table, np.unique(instrument_ids).tolist(), lo_day, hi_day)
    span = hi_day - lo_day + 1
    row_keys = ids * span + (days - lo_day)
    flat = np.zeros(rows.size + 1, dtype=np.int32)  # a last 0 so that every position can start a stretch
    flat[:-1].reshape(rows.shape)[...] = rows  # one pass: native byte order, contiguous

    def position(bucket: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        day = bucket // per_day
        k = instrument_ids * span + (day - lo_day)
        r = np.searchsorted(row_keys, k)
        found = r < len(row_keys)
        found[found] &= row_keys[r[found]] == k[found]
        return r * per_day + np.where(found, bucket - day * per_day, 0)

    starts, ends = position(first), position(end)
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    sums = np.add.reduceat(flat, bounds)[0::2].astype(np.int64)  # each window's stretch (odd ones: between)
    sums[ends <= starts] = 0  # reduceat gives an empty stretch its first element
    return sums
