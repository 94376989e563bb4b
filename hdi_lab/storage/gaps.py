"""What :mod:`hdi_lab.core.gaps` asks the database: the time ranges completed ingests covered, and the rows stored
per instrument and session window (counted in the database, one index range scan per window)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.extensions

from hdi_lab.storage.cursor import quote, transaction

__all__ = ["covered", "present"]


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
    covered. Merged in the database (``range_agg``, PostgreSQL 14+): years of daily chunks come back as a few rows.

    Raises StorageError when the database fails."""
    with transaction(conn) as cur:
        log = quote(conn, schema, "ingest_log")
        cur.execute(
            "SELECT g.symbol, g.dataset, lower(r), upper(r) FROM ("
            "SELECT s.symbol, l.dataset, range_agg(tstzrange(l.start_ts, l.end_ts)) AS m "
            f"FROM {log} l CROSS JOIN LATERAL unnest(l.symbols) AS s(symbol) "
            "WHERE l.schema = %s AND l.stype_in = %s AND s.symbol = ANY(%s) AND (%s::text IS NULL OR l.dataset = %s) "
            "GROUP BY 1, 2) g CROSS JOIN LATERAL unnest(g.m) AS r ORDER BY 1, 2, 3",
            (data_schema, stype_in, list(symbols), dataset, dataset),
        )
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=["symbol", "dataset", "start", "end"])
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
    t = quote(conn, schema, table)
    limit = " LIMIT 1" if exists_only else ""
    with transaction(conn) as cur:
        # one index range scan of (instrument_id, ts_event) per window; the windows come back in their order
        cur.execute(
            f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {t} b WHERE b.instrument_id = u.iid "
            f"AND b.ts_event >= to_timestamp(u.lo) AND b.ts_event < to_timestamp(u.hi){limit}) x) "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY AS u(iid, lo, hi, n) ORDER BY u.n",
            (instrument_ids.tolist(), (opens // 1_000_000_000).tolist(), (closes // 1_000_000_000).tolist()),
        )
        return np.array([r[0] for r in cur.fetchall()], dtype=np.int64)
