"""Reading stored features, listing the sets computed, and indicator overlays on bars (not stored)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hdi_lab import indicators
from hdi_lab.core.session import HdiSession, with_session
from hdi_lab.errors import ValidationError
from hdi_lab.features.sets import FEATURE_SETS, feature_set, table_name, variant
from hdi_lab.schemas import parse_range, require_symbols
from hdi_lab.storage import features as stored_features

__all__ = ["list_sets", "overlay", "read"]


def read(
    set_name: str,
    symbols: str | Sequence[str],
    start: object,
    end: object,
    *,
    interval: str = "1d",
    columns: Sequence[str] | None = None,
    dataset: str | None = None,
    adjust: str | None = None,
    view: str | None = None,
    session: HdiSession | None = None,
) -> pd.DataFrame:
    """Stored features of ``symbols`` with ``event_timestamp`` in ``[start, end)``.

    Columns ``instrument_id``, ``symbol`` (the requested symbol that maps to the instrument),
    ``event_timestamp`` (UTC, the bar's close) and the feature columns (NaN during warm-up), one
    row per instrument and bar, ordered by instrument then time. With ``adjust`` (and ``view``), the
    features computed over back-adjusted continuous series (``symbols`` are continuous symbols; their
    rows carry the series id as ``instrument_id``, see :mod:`hdi_lab.features.continuous`).

    Raises ValidationError for an unknown set, interval, column or symbol, a bad range, a table
    not computed yet, or with ``adjust``: an unknown adjust or view, a series not computed in that
    table, or one symbol computed over several datasets without ``dataset``.
    """
    fs = feature_set(set_name)
    var = variant(adjust, view)
    name = table_name(fs.name, interval, var)
    syms = require_symbols(symbols, "e.g. AAPL or ESH4")
    lo, hi = parse_range(start, end)
    wanted = [c.name for c in fs.resolved]
    if columns:
        unknown = [c for c in columns if c not in wanted]
        if unknown:
            raise ValidationError(f"{fs.name} has no column(s) {unknown}: choose from {wanted}")
        wanted = [c for c in wanted if c in columns]
    if var:
        return with_session(session, lambda s: _read_series(s, name, syms, lo, hi, dataset, wanted))
    return with_session(
        session, lambda s: stored_features.read_features(s.connection(), s.schema, name, syms, lo, hi, dataset, wanted)
    )


def _read_series(
    session: HdiSession,
    name: str,
    syms: tuple[str, ...],
    lo: pd.Timestamp,
    hi: pd.Timestamp,
    dataset: str | None,
    wanted: list[str],
) -> pd.DataFrame:
    found = stored_features.stored_series(session.connection(), session.schema, name, syms, dataset)
    series: dict[int, str] = {}
    for sym in syms:
        mine = [f for f in found if f.symbol == sym]
        if not mine:
            raise ValidationError(
                f"{sym} has no features in {name}{f' ({dataset})' if dataset else ''}: compute them first with the "
                "same adjust and view (hdi_lab.features.compute / hdi features compute)"
            )
        if len(mine) > 1:
            raise ValidationError(
                f"{sym} is stored in {name} for several datasets ({', '.join(f.dataset for f in mine)}): pass dataset="
            )
        series[mine[0].series_id] = sym
    return stored_features.read_series_features(session.connection(), session.schema, name, series, lo, hi, wanted)


def list_sets(session: HdiSession | None = None) -> pd.DataFrame:
    """Every defined set with, per interval computed, its table, rows, last event and last update."""
    rows = with_session(session, lambda s: stored_features.list_tables(s.connection(), s.schema))
    done = {r[0] for r in rows}
    out = [
        {
            "feature_set": n,
            "version": fs.version,
            "interval": iv,
            "variant": var,
            "table": t,
            "rows": cnt,
            "last_event": last,
            "updated": upd,
            "columns": ", ".join(fs.columns),
        }
        for n, iv, var, t, cnt, last, upd in rows
        if (fs := FEATURE_SETS.get(n)) is not None
    ]
    out += [
        {
            "feature_set": fs.name,
            "version": fs.version,
            "interval": None,
            "variant": None,
            "table": None,
            "rows": 0,
            "last_event": None,
            "updated": None,
            "columns": ", ".join(fs.columns),
        }
        for fs in FEATURE_SETS.values()
        if fs.name not in done
    ]
    return pd.DataFrame(
        out,
        columns=["feature_set", "version", "interval", "variant", "table", "rows", "last_event", "updated", "columns"],
    )


def overlay(bars: pd.DataFrame, cols: str | Sequence[str]) -> pd.DataFrame:
    """``bars`` (a bar query result, possibly several instruments) with indicator columns added on the fly.

    Computed per instrument over the rows given (not stored); warm-up rows are NaN. Nothing is
    written and ``bars`` is not modified. Raises ValidationError for an unknown indicator column.
    """
    wanted = indicators.columns(cols) if isinstance(cols, str) else indicators.columns(list(cols))
    out = bars.copy()
    for c in wanted:
        out[c.name] = np.nan
    if bars.empty:
        return out
    keys = [k for k in ("symbol", "instrument_id") if k in bars.columns]
    groups = bars.groupby(keys, sort=False, observed=True).indices if keys else {None: np.arange(len(bars))}
    for pos in groups.values():
        feats = indicators.compute(bars.iloc[pos], wanted, short="nan")
        for c in wanted:
            out.iloc[pos, out.columns.get_loc(c.name)] = feats[c.name].to_numpy()  # type: ignore[index]
    return out
