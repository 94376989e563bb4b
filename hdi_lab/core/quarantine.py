"""Quarantined records: list, show, and retry after a fix (re-validated, then loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hdi_lab import dbn
from hdi_lab.core.ingestion import load_records
from hdi_lab.core.session import HdiSession
from hdi_lab.core.validate import validate
from hdi_lab.dbn.writer import record_dtype
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Schema
from hdi_lab.storage import load
from hdi_lab.storage import quarantine as storage_quarantine
from hdi_lab.storage.db import transaction

__all__ = ["RetryResult", "list_entries", "retry", "show"]


@dataclass(frozen=True)
class RetryResult:
    retried: int
    loaded: int
    duplicates: int
    still_bad: int


def list_entries(session: HdiSession, status: str = "open", rule: str | None = None, limit: int = 100) -> pd.DataFrame:
    """Quarantine entries (newest first) without the record bodies. Raises StorageError."""
    return storage_quarantine.entries(session.connection(), session.schema, status, rule, limit)


def show(session: HdiSession, entry_id: int) -> dict[str, Any]:
    """One quarantine entry, record included. Raises ValidationError when it does not exist, StorageError."""
    row = storage_quarantine.entry(session.connection(), session.schema, entry_id)
    if row is None:
        raise ValidationError(f"quarantine entry {entry_id} does not exist: list them with `hdi quarantine list`")
    return row


def retry(session: HdiSession, ids: list[int] | None = None) -> RetryResult:
    """Re-validate open entries (all, or ``ids``); valid records are loaded and marked resolved.

    Fix a record first (e.g. ``UPDATE quarantine SET record = jsonb_set(record, '{high}', ...)``)
    or load what it lacked (e.g. the instrument's definitions). Runs in one transaction.

    Raises ValidationError when one of ``ids`` is not an open entry (nothing changes then), StorageError.
    """
    retried = loaded = dups = still = 0
    with transaction(session.connection()) as cur:
        rows = storage_quarantine.lock_open(cur, session.schema, ids)
        if ids and len(rows) != len(set(ids)):
            found = {r[0] for r in rows}
            raise ValidationError(f"no open quarantine entries {sorted(set(ids) - found)}")
        groups: dict[tuple[str, str, Any, Any], list[tuple[int, dict[str, Any], int]]] = {}
        for qid, ds, sch, rec, dup, lo, hi in rows:
            groups.setdefault((ds, sch, lo, hi), []).append((qid, rec, dup))
        for (ds, sch, lo, hi), items in groups.items():
            schema = Schema(sch)
            records = dbn.records_from_json([r for _, r, _ in items], record_dtype(schema))
            ids_arr = np.array([q for q, _, _ in items])
            dup_idx = np.array([d for _, _, d in items], dtype=np.int32)
            known = None
            if schema is not Schema.DEFINITION:
                known = load.known_instruments(
                    cur, session.schema, ds, np.unique(records["instrument_id"]).astype(np.int64)
                )
            rej = validate(records, schema, pd.Timestamp(lo).value, pd.Timestamp(hi).value, known)
            good = np.ones(len(records), dtype=bool)
            good[rej.index] = False
            if len(rej.index):
                storage_quarantine.set_reasons(
                    cur,
                    session.schema,
                    [
                        (int(ids_arr[j]), rule, reason)
                        for j, rule, reason in zip(rej.index, rej.rules, rej.reasons, strict=True)
                    ],
                )
            counts = dict(inserted=0, updated=0, duplicates=0)
            load_records(cur, session.schema, schema, ds, records[good], counts, dup_idx[good])
            storage_quarantine.mark_resolved(cur, session.schema, ids_arr[good].tolist())
            retried += len(records)
            loaded += counts["inserted"] + counts["updated"]
            dups += counts["duplicates"]
            still += int((~good).sum())
    return RetryResult(retried, loaded, dups, still)
