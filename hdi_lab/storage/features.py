"""Feature tables, read for :mod:`hdi_lab.featurestore.publish`: what a publication covers."""

from __future__ import annotations

import pandas as pd
import psycopg2.extensions
from psycopg2 import sql

from hdi_lab.errors import ValidationError
from hdi_lab.storage.cursor import transaction

__all__ = ["published_rows"]


def published_rows(conn: psycopg2.extensions.connection, schema: str, table: str, lo: pd.Timestamp | None,
                   hi: pd.Timestamp | None) -> tuple[list[int], pd.Timestamp | None, pd.Timestamp | None]:
    """Instruments and first event of the rows being published (event_timestamp in [lo, hi)), and the
    table's latest event (materialization runs up to it: later rows of other windows stay online)."""
    with transaction(conn) as cur:
        name = sql.Identifier(schema, table).as_string(conn)
        cur.execute("SELECT to_regclass(%s)", (name,))
        row = cur.fetchone()
        if row is None or row[0] is None:
            raise ValidationError(f"{table} does not exist yet: compute the set first (publish with compute=True, "
                                  "hdi features compute)")
        where = "WHERE event_timestamp >= %s AND event_timestamp < %s" if lo is not None else ""
        params = (lo.to_pydatetime(), hi.to_pydatetime()) if lo is not None and hi is not None else ()
        cur.execute(f"SELECT instrument_id, min(event_timestamp) FROM {name} {where} "
                    "GROUP BY instrument_id ORDER BY instrument_id", params)
        rows = cur.fetchall()
        cur.execute(f"SELECT max(event_timestamp) FROM {name}")
        latest = cur.fetchone()
    if not rows or latest is None:
        return [], None, None
    return ([int(r[0]) for r in rows], pd.Timestamp(min(r[1] for r in rows)).tz_convert("UTC"),
            pd.Timestamp(latest[0]).tz_convert("UTC"))
