"""Bar-by-bar comparison of the same market from two sources (e.g. Databento and IB).

Both sides are read with :func:`hdi_lab.core.retrieval.query` (symbols resolved as of each date, prices
as int64 fixed-point 1e-9) and aligned on ``ts_event``. Each bar gets one status:

- ``match``: both sides have it, prices within ``price_tol`` and volumes within ``volume_tol``;
- ``missing_left`` / ``missing_right``: only the other side has it;
- ``price_mismatch``: some open/high/low/close differ by more than ``price_tol`` (absolute, in price
  units; 0 = exact);
- ``volume_mismatch``: prices agree but volumes differ by more than ``volume_tol`` (relative to the
  larger volume; 0 = exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hdi_lab.core import retrieval
from hdi_lab.core.session import HdiSession
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Schema, parse_enum, parse_range

__all__ = ["PRICES", "STATUSES", "BarComparison", "compare_bars"]

PRICES = ("open", "high", "low", "close")
STATUSES = ("match", "missing_left", "missing_right", "price_mismatch", "volume_mismatch")


@dataclass
class BarComparison:
    """The aligned bars (``frame``) and the count of each status."""

    schema: str
    left: str
    right: str
    frame: pd.DataFrame  # index ts_event; left_*/right_* columns, max_price_diff, volume_diff, status

    @property
    def counts(self) -> dict[str, int]:
        got = self.frame["status"].value_counts()
        return {s: int(got.get(s, 0)) for s in STATUSES}

    @property
    def differences(self) -> pd.DataFrame:
        """The bars whose status is not ``match``."""
        return self.frame[self.frame["status"] != "match"]

    def __str__(self) -> str:
        c = self.counts
        total = len(self.frame)
        return (
            f"{self.schema} {self.left} vs {self.right}: {total} bars, {c['match']} match, "
            f"{c['missing_left']} only in right, {c['missing_right']} only in left, "
            f"{c['price_mismatch']} price mismatches, {c['volume_mismatch']} volume mismatches"
        )


def compare_bars(
    session: HdiSession,
    schema: str | Schema,
    left: str,
    right: str,
    start: object,
    end: object,
    *,
    left_dataset: str | None = None,
    right_dataset: str | None = "IB",
    price_tol: float = 0.0,
    volume_tol: float = 0.0,
) -> BarComparison:
    """Compare the bars of symbol ``left`` (in ``left_dataset``) with ``right`` (in ``right_dataset``).

    Raises ValidationError (not a bar schema, a negative tolerance, a bad range, an unknown symbol or one
    with several bars at the same time) and StorageError.
    """
    sch = parse_enum(Schema, schema, "schema")
    if not sch.is_bar:
        bars = ", ".join(s for s in Schema if s.is_bar)
        raise ValidationError(f"schema={sch} is not a bar schema: compare one of {bars}")
    if price_tol < 0 or volume_tol < 0:
        raise ValidationError("price_tol and volume_tol must be >= 0")
    lo, hi = parse_range(start, end)
    a = _side(session, sch, left, lo, hi, left_dataset, "left")
    b = _side(session, sch, right, lo, hi, right_dataset, "right")
    frame = a.join(b, how="outer").sort_index()
    has_a, has_b = frame["left_close"].notna().to_numpy(), frame["right_close"].notna().to_numpy()
    diffs = np.zeros(len(frame), dtype=np.int64)
    for p in PRICES:
        d = np.abs(frame[f"left_{p}"].fillna(0).to_numpy(np.int64) - frame[f"right_{p}"].fillna(0).to_numpy(np.int64))
        diffs = np.maximum(diffs, d)
    va = frame["left_volume"].fillna(0).to_numpy(np.int64)
    vb = frame["right_volume"].fillna(0).to_numpy(np.int64)
    vdiff = np.abs(va - vb)
    price_bad = diffs > round(price_tol * 1e9)
    volume_bad = vdiff > volume_tol * np.maximum(va, vb)
    status = np.select(
        [~has_a, ~has_b, price_bad, volume_bad],
        ["missing_left", "missing_right", "price_mismatch", "volume_mismatch"],
        default="match",
    )
    both = has_a & has_b
    frame["max_price_diff"] = np.where(both, diffs / 1e9, np.nan)
    frame["volume_diff"] = pd.arrays.IntegerArray(va - vb, ~both)
    frame["status"] = status
    for side in ("left", "right"):
        for p in PRICES:
            frame[f"{side}_{p}"] = frame[f"{side}_{p}"] / 1e9
    names = (
        f"{left}" + (f" ({left_dataset})" if left_dataset else ""),
        f"{right}" + (f" ({right_dataset})" if right_dataset else ""),
    )
    return BarComparison(sch.value, names[0], names[1], frame)


def _side(
    session: HdiSession, schema: Schema, symbol: str, lo: pd.Timestamp, hi: pd.Timestamp, dataset: str | None, side: str
) -> pd.DataFrame:
    rows = retrieval.query(session, schema, symbol, lo, hi, dataset=dataset, price_type="fixed")
    out = pd.DataFrame({f"{side}_{k}": rows[k].astype("Int64") for k in (*PRICES, "volume")}, index=rows.index)
    if out.index.has_duplicates:
        raise ValidationError(
            f"{symbol!r} has several bars at the same time in {dataset or 'all datasets'}: "
            "give the dataset of one source"
        )
    return out
