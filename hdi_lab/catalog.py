"""What the database holds: row counts, coverage per table and instrument, recent ingests."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from psycopg2 import sql as pgsql

from hdi_lab.session import HdiSession
from hdi_lab.storage.db import ServerInfo, fetch_frame, one, server_info, transaction
from hdi_lab.storage.tables import TABLES
from hdi_lab.storage.timescale import StorageInfo, describe


@dataclass(frozen=True)
class Status:
    server: ServerInfo
    coverage: pd.DataFrame  # table, dataset, symbol, instrument_id, rows, first, last
    recent: pd.DataFrame  # latest ingest-log rows
    instruments: int
    quarantine_open: int
    storage: StorageInfo | None = None  # TimescaleDB objects (hypertables, compression, policies)


def status(session: HdiSession, recent: int = 10) -> Status:
    conn = session.connection()
    info = server_info(conn)
    parts = []
    with transaction(conn) as cur:
        def q(*names: str) -> str:
            return pgsql.Identifier(*names).as_string(conn)

        s = session.schema
        for t in {t.name: t for t in TABLES.values()}.values():
            parts.append(
                f"SELECT '{t.name}' AS tbl, d.instrument_id, p.dataset, count(*) AS rows, "
                f"min(d.{t.time_column}) AS first, max(d.{t.time_column}) AS last "
                f"FROM {q(s, t.name)} d JOIN {q(s, 'publishers')} p USING (publisher_id) "
                "GROUP BY d.instrument_id, p.dataset"
            )
        cur.execute(
            f"WITH c AS ({' UNION ALL '.join(parts)}) "
            "SELECT c.tbl AS \"table\", c.dataset, "
            f"(SELECT i.raw_symbol FROM {q(s, 'instruments')} i WHERE i.instrument_id = c.instrument_id "
            "AND i.dataset = c.dataset ORDER BY i.ts_recv_ns DESC LIMIT 1) AS raw_symbol, "
            f"COALESCE((SELECT string_agg(DISTINCT y.symbol, ',') FROM {q(s, 'symbology')} y "
            "WHERE y.instrument_id = c.instrument_id AND y.dataset = c.dataset AND y.stype = 'raw_symbol'), '') "
            "AS symbols, c.instrument_id, c.rows, c.first, c.last FROM c ORDER BY 1, 2, 5"
        )
        coverage = fetch_frame(cur)
        cur.execute(
            f"SELECT id, finished_at, provider, dataset, schema, array_to_string(symbols, ',') AS symbols, "
            f"start_ts, end_ts, fetched, inserted, updated, duplicates, quarantined, round(seconds::numeric, 3) "
            f"AS seconds, array_to_string(warnings, '; ') AS warnings FROM {q(s, 'ingest_log')} "
            "ORDER BY id DESC LIMIT %s",
            (recent,),
        )
        log = fetch_frame(cur)
        cur.execute(f"SELECT count(DISTINCT (dataset, instrument_id)) FROM {q(s, 'instruments')}")
        n_instruments = int(one(cur)[0])
        cur.execute(f"SELECT count(*) FROM {q(s, 'quarantine')} WHERE status = 'open'")
        n_quarantine = int(one(cur)[0])
    return Status(info, coverage, log, n_instruments, n_quarantine, describe(conn, session.schema))


def storage_info(session: HdiSession) -> StorageInfo:
    """The server, TimescaleDB version or plain PostgreSQL, hypertables, chunks, compression, policies."""
    return describe(session.connection(), session.schema)


def search_symbols(session: HdiSession, pattern: str = "", limit: int = 200) -> pd.DataFrame:
    """Known symbols (symbology intervals and the instrument master) matching ``pattern``.

    ``pattern`` is a case-insensitive substring (``%`` and ``_`` match literally). Columns:
    symbol, stype, dataset, instrument_id, raw_symbol, first, last (dates the mapping covers).
    """
    conn = session.connection()
    like = "%" + pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with transaction(conn) as cur:
        s = pgsql.Identifier(session.schema).as_string(conn)
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
