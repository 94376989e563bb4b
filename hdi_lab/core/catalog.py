"""What the database holds: row counts, coverage per table and instrument, recent ingests."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hdi_lab.core.session import HdiSession
from hdi_lab.storage import catalog as storage_catalog
from hdi_lab.storage.db import ServerInfo, server_info

__all__ = ["ServerInfo", "Status", "search_symbols", "server_info", "status", "storage_info"]


@dataclass(frozen=True)
class Status:
    server: ServerInfo  # with the schema's TimescaleDB objects (hypertables, compression, policies)
    coverage: pd.DataFrame  # table, dataset, symbol, instrument_id, rows, first, last
    recent: pd.DataFrame  # latest ingest-log rows
    instruments: int
    quarantine_open: int


def status(session: HdiSession, recent: int = 10) -> Status:
    """The server, what is stored (coverage per table and instrument) and the ``recent`` latest ingests.

    Raises StorageError when the database cannot be reached or read.
    """
    conn = session.connection()
    info = server_info(conn, session.schema)
    coverage, log, n_instruments, n_quarantine = storage_catalog.contents(conn, session.schema, recent)
    return Status(info, coverage, log, n_instruments, n_quarantine)


def storage_info(session: HdiSession) -> ServerInfo:
    """The server, TimescaleDB version or plain PostgreSQL, hypertables, chunks, compression, policies.

    Raises StorageError when the database cannot be reached or read.
    """
    return server_info(session.connection(), session.schema)


def search_symbols(session: HdiSession, pattern: str = "", limit: int = 200) -> pd.DataFrame:
    """Known symbols (symbology intervals and the instrument master) matching ``pattern``.

    ``pattern`` is a case-insensitive substring (``%`` and ``_`` match literally). Columns:
    symbol, stype, dataset, instrument_id, raw_symbol, first, last (dates the mapping covers).

    Raises StorageError when the database cannot be reached or read.
    """
    return storage_catalog.search_symbols(session.connection(), session.schema, pattern, limit)
