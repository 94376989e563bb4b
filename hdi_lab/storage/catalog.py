"""What the database holds, read for :mod:`hdi_lab.core.catalog`: coverage per table and instrument, recent
ingests, counts, and the known symbols."""

from __future__ import annotations

import pandas as pd
import psycopg2.extensions

from hdi_lab.storage.cursor import fetch_frame, one, quote, transaction
from hdi_lab.storage.tables import TABLES

__all__ = ["contents", "search_symbols"]


def contents(
    conn: psycopg2.extensions.connection, schema: str, recent: int
) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """Coverage (table, dataset, symbol, instrument_id, rows, first, last), the latest ``recent``
    ingest-log rows, the number of instruments and of open quarantine entries, in one transaction."""
    with transaction(conn) as cur:

        def q(*names: str) -> str:
            return quote(conn, *names)

        s = schema
        parts = [
            f"SELECT '{t.name}' AS tbl, d.instrument_id, p.dataset, count(*) AS rows, "
            f"min(d.{t.time_column}) AS first, max(d.{t.time_column}) AS last "
            f"FROM {q(s, t.name)} d JOIN {q(s, 'publishers')} p USING (publisher_id) "
            "GROUP BY d.instrument_id, p.dataset"
            for t in {t.name: t for t in TABLES.values()}.values()
        ]
        cur.execute(
            f"WITH c AS ({' UNION ALL '.join(parts)}) "
            'SELECT c.tbl AS "table", c.dataset, '
            f"(SELECT i.raw_symbol FROM {q(s, 'instruments')} i WHERE i.instrument_id = c.instrument_id "
            "AND i.dataset = c.dataset ORDER BY i.ts_recv_ns DESC LIMIT 1) AS raw_symbol, "
            f"COALESCE((SELECT string_agg(DISTINCT y.symbol, ',') FROM {q(s, 'symbology')} y "
            "WHERE y.instrument_id = c.instrument_id AND y.dataset = c.dataset AND y.stype = 'raw_symbol'), '') "
            "AS symbols, c.instrument_id, c.rows, c.first, c.last FROM c ORDER BY 1, 2, 5"
        )
        coverage = fetch_frame(cur)
        cur.execute(
            f"SELECT id, finished_at, provider, dataset, schema, array_to_string(symbols, ',') AS symbols, "
            "start_ts, end_ts, fetched, inserted, updated, duplicates, quarantined, deleted, "
            "round(seconds::numeric, 3) AS seconds, array_to_string(warnings, '; ') AS warnings "
            f"FROM {q(s, 'ingest_log')} "
            "ORDER BY id DESC LIMIT %s",
            (recent,),
        )
        log = fetch_frame(cur)
        cur.execute(f"SELECT count(DISTINCT (dataset, instrument_id)) FROM {q(s, 'instruments')}")
        n_instruments = int(one(cur)[0])
        cur.execute(f"SELECT count(*) FROM {q(s, 'quarantine')} WHERE status = 'open'")
        n_quarantine = int(one(cur)[0])
    return coverage, log, n_instruments, n_quarantine


def search_symbols(conn: psycopg2.extensions.connection, schema: str, pattern: str, limit: int) -> pd.DataFrame:
    """Known symbols matching ``pattern`` (see :func:`hdi_lab.core.catalog.search_symbols`)."""
    like = "%" + pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with transaction(conn) as cur:
        s = quote(conn, schema)
        cur.execute(
            f"WITH m AS ("
            f"  SELECT y.symbol, y.stype, y.dataset, y.instrument_id, min(y.d0) AS first, max(y.d1) AS last "
            f"  FROM {s}.symbology y WHERE y.symbol ILIKE %(p)s GROUP BY 1, 2, 3, 4 "
            f"  UNION "
            f"  SELECT i.raw_symbol, 'raw_symbol', i.dataset, i.instrument_id, min(i.ts_recv)::date, "
            f"  (max(i.ts_recv)::date + 1) FROM {s}.instruments i WHERE i.raw_symbol ILIKE %(p)s GROUP BY 1, 2, 3, 4) "
            f"SELECT m.symbol, m.stype, m.dataset, m.instrument_id, "
            f"  (SELECT i.raw_symbol FROM {s}.instruments i WHERE i.dataset = m.dataset "
            f"   AND i.instrument_id = m.instrument_id ORDER BY i.ts_recv_ns DESC LIMIT 1) AS raw_symbol, "
            f"  min(m.first) AS first, max(m.last) AS last "
            f"FROM m GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT %(n)s",
            {"p": like, "n": limit},
        )
        return fetch_frame(cur)
