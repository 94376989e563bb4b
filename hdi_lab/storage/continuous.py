"""The reads behind continuous futures: a root's contracts (from stored definitions), each contract's volume
per trading session, open interest (statistics), and the last close before an instant (the roll gaps)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg2.extensions

from hdi_lab.storage.cursor import fetch_frame, quote, transaction

__all__ = ["OPEN_INTEREST", "contracts", "futures_roots", "last_closes", "open_interest", "session_volumes"]

#: the statistics ``stat_type`` of open interest (DBN's ``StatType.OPEN_INTEREST``)
OPEN_INTEREST = 9
#: the statistics ``update_action`` of a deleted statistic (DBN's ``StatUpdateAction.DELETE``)
_DELETE = 2


def _stamps(ns: Sequence[int] | npt.NDArray[np.int64]) -> list[pd.Timestamp]:
    return list(pd.to_datetime(np.asarray(ns, dtype=np.int64), unit="ns", utc=True))


def _publishers(conn: psycopg2.extensions.connection, schema: str, alias: str) -> str:
    publishers = quote(conn, schema, "publishers")
    return f"{alias}.publisher_id IN (SELECT p.publisher_id FROM {publishers} p WHERE p.dataset = %s)"


def contracts(conn: psycopg2.extensions.connection, schema: str, root: str, dataset: str | None) -> pd.DataFrame:
    """The futures of ``root`` (definitions whose ``asset`` is ``root``, instrument class ``F``, with an
    expiration), each by its latest definition: columns dataset, instrument_id, raw_symbol, exchange,
    expiration and activation (UTC nanoseconds; activation -1 where the definition has none). Sorted by
    expiration, then instrument_id. Raises StorageError."""
    t = quote(conn, schema, "instruments")
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT DISTINCT ON (dataset, instrument_id) dataset, instrument_id, raw_symbol, exchange, "
            "(extract(epoch FROM expiration) * 1e6)::int8 * 1000 AS expiration, "
            "COALESCE((extract(epoch FROM activation) * 1e6)::int8 * 1000, -1) AS activation "
            f"FROM {t} WHERE asset = %s AND instrument_class = 'F' AND expiration IS NOT NULL "
            "AND (%s::text IS NULL OR dataset = %s) ORDER BY dataset, instrument_id, ts_recv_ns DESC",
            (root, dataset, dataset),
        )
        frame = fetch_frame(cur)
    if frame.empty:
        return pd.DataFrame(
            {
                "dataset": pd.Series(dtype=object),
                "instrument_id": pd.Series(dtype=np.int64),
                "raw_symbol": pd.Series(dtype=object),
                "exchange": pd.Series(dtype=object),
                "expiration": pd.Series(dtype=np.int64),
                "activation": pd.Series(dtype=np.int64),
            }
        )
    for name in ("instrument_id", "expiration", "activation"):
        frame[name] = frame[name].astype(np.int64)
    return frame.sort_values(["expiration", "instrument_id"], kind="stable").reset_index(drop=True)


def futures_roots(conn: psycopg2.extensions.connection, schema: str) -> list[str]:
    """Every futures root (definition ``asset``) stored, sorted. Raises StorageError."""
    t = quote(conn, schema, "instruments")
    with transaction(conn) as cur:
        cur.execute(f"SELECT DISTINCT asset FROM {t} WHERE instrument_class = 'F' AND asset IS NOT NULL ORDER BY 1")
        return [str(r[0]) for r in cur.fetchall() if r[0]]


def session_volumes(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: str,
    dataset: str,
    ids: Sequence[int],
    bounds_ns: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """The volume of each instrument of ``ids`` in each window ``[bounds[k-1], bounds[k])`` of the bars
    ``table``: an array (len(bounds), len(ids)) whose row k (k >= 1) holds window k; row 0 is zero.
    Summed by the server (one row per instrument and window comes back). Raises StorageError."""
    out = np.zeros((len(bounds_ns), len(ids)), dtype=np.int64)
    if len(bounds_ns) < 2 or not ids:
        return out
    t = quote(conn, schema, table)
    stamps = _stamps(bounds_ns)
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT b.instrument_id, width_bucket(b.ts_event, %s::timestamptz[]) AS k, sum(b.volume)::int8 "
            f"FROM {t} b WHERE b.instrument_id = ANY(%s) AND b.ts_event >= %s AND b.ts_event < %s "
            f"AND {_publishers(conn, schema, 'b')} GROUP BY 1, 2",
            (stamps, list(ids), stamps[0], stamps[-1], dataset),
        )
        rows = cur.fetchall()
    column = {int(iid): j for j, iid in enumerate(ids)}
    for iid, k, volume in rows:
        out[int(k), column[int(iid)]] = int(volume)
    return out


def open_interest(
    conn: psycopg2.extensions.connection, schema: str, dataset: str, ids: Sequence[int], lo_ns: int, hi_ns: int
) -> pd.DataFrame:
    """The open-interest statistics of ``ids`` with ``ts_event`` in ``[lo, hi)`` (deletions left out):
    columns instrument_id, ts_recv_ns, quantity, sorted by ts_recv_ns. Raises StorageError."""
    t = quote(conn, schema, "statistics")
    lo, hi = _stamps([lo_ns, hi_ns])
    with transaction(conn) as cur:
        cur.execute(
            f"SELECT s.instrument_id, s.ts_recv_ns, s.quantity FROM {t} s WHERE s.instrument_id = ANY(%s) "
            "AND s.ts_event >= %s AND s.ts_event < %s AND s.stat_type = %s AND s.update_action <> %s "
            f"AND s.quantity IS NOT NULL AND {_publishers(conn, schema, 's')} ORDER BY s.ts_recv_ns, s.instrument_id",
            (list(ids), lo, hi, OPEN_INTEREST, _DELETE, dataset),
        )
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=["instrument_id", "ts_recv_ns", "quantity"])
    return frame.astype(np.int64)


def last_closes(
    conn: psycopg2.extensions.connection,
    schema: str,
    table: str,
    dataset: str,
    ids: Sequence[int],
    before_ns: Sequence[int],
) -> list[int | None]:
    """For each pair (``ids[k]``, ``before_ns[k]``): the close (int64 fixed-point) of the instrument's last
    bar in ``table`` starting before that instant, None where it has none. Raises StorageError."""
    if not ids:
        return []
    t = quote(conn, schema, table)
    with transaction(conn) as cur:
        cur.execute(
            "SELECT r.k, c.close FROM unnest(%s::int4[], %s::int8[], %s::timestamptz[]) AS r(k, iid, before) "
            f"CROSS JOIN LATERAL (SELECT b.close FROM {t} b WHERE b.instrument_id = r.iid AND b.ts_event < r.before "
            f"AND {_publishers(conn, schema, 'b')} ORDER BY b.ts_event DESC LIMIT 1) c",
            (list(range(len(ids))), [int(i) for i in ids], _stamps(before_ns), dataset),
        )
        found = {int(k): int(close) for k, close in cur.fetchall()}
    return [found.get(k) for k in range(len(ids))]
