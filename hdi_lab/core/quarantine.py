"""Quarantined records: list, show, and retry after a fix (re-validated, then loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from hdi_lab.core.ingestion import reload_quarantined
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.storage import quarantine as storage_quarantine
from hdi_lab.storage.db import transaction

__all__ = ["RetryResult", "Stayed", "list_entries", "retry", "show"]


@dataclass(frozen=True)
class Stayed:
    """Open entries that still break one rule: how many, and the reason of the first."""

    rule: str
    count: int
    reason: str


@dataclass(frozen=True)
class RetryResult:
    retried: int
    loaded: int
    duplicates: int
    still_bad: int
    stayed: tuple[Stayed, ...] = ()  # per rule, most entries first


def list_entries(session: HdiSession, status: str = "open", rule: str | None = None, limit: int = 100) -> pd.DataFrame:
    """Quarantine entries (newest first) without the record bodies. Raises StorageError."""
    return storage_quarantine.entries(session.connection(), session.schema, status, rule, limit)


def show(session: HdiSession, entry_id: int) -> dict[str, Any]:
    """One quarantine entry, record included. Raises ValidationError when it does not exist, StorageError."""
    row = storage_quarantine.entry(session.connection(), session.schema, entry_id)
    if row is None:
        raise ValidationError(f"quarantine entry {entry_id} does not exist: list them with `hdi quarantine list`")
    return row


def retry(session: HdiSession, ids: list[int] | None = None, *, auto: bool = False) -> RetryResult:
    """Re-validate open entries (all, or ``ids``) with the ingest's validators; valid records are loaded and
    their entries resolved, the others stay open with the rule they break now (``stayed`` says which and why).

    Fix a record first (e.g. ``UPDATE quarantine SET record = jsonb_set(record, '{high}', ...)``)
    or load what it lacked (e.g. the instrument's definitions: an ingest that brings them retries the
    entries of that instrument by itself). ``auto``: every open entry whose rule now passes, as a routine
    (e.g. from cron) rather than after a fix; its resolved entries say so. Runs in one transaction.

    Raises ValidationError when one of ``ids`` is not an open entry, or ``ids`` are given with ``auto``
    (nothing changes then), StorageError.
    """
    if auto and ids:
        raise ValidationError("retry --auto retries every open entry: give no entry ids with it")
    how = "resolved by retry --auto: its rule now passes" if auto else "resolved by retry"
    with transaction(session.connection()) as cur:
        rows = storage_quarantine.lock_open(cur, session.schema, ids)
        if ids and len(rows) != len(set(ids)):
            found = {r[0] for r in rows}
            raise ValidationError(f"no open quarantine entries {sorted(set(ids) - found)}")
        done = reload_quarantined(cur, session.schema, rows, how)
    per_rule: dict[str, list[str]] = {}
    for _, rule, reason in done.stayed:
        per_rule.setdefault(rule, []).append(reason)
    stayed = sorted(
        (Stayed(rule, len(reasons), reasons[0]) for rule, reasons in per_rule.items()), key=lambda s: (-s.count, s.rule)
    )
    return RetryResult(len(rows), done.loaded, done.duplicates, len(done.stayed), tuple(stayed))
