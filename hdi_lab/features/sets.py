"""The catalogue of feature sets: named, versioned sets of indicator columns, and their table names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hdi_lab import indicators
from hdi_lab.errors import ValidationError
from hdi_lab.indicators import Column
from hdi_lab.schemas import Adjust, View, check_interval, parse_enum
from hdi_lab.storage.features import FeatureTable

__all__ = [
    "FEATURE_SETS",
    "FeatureSet",
    "feature_set",
    "feature_table",
    "state_table_name",
    "table_name",
    "variant",
]


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned set of indicator columns. Change a set only by adding a new version."""

    name: str
    version: int
    columns: tuple[str, ...]
    description: str = ""

    @property
    def resolved(self) -> tuple[Column, ...]:
        return indicators.columns(self.columns)

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "columns": [c.to_json() for c in self.resolved],
        }


FEATURE_SETS: dict[str, FeatureSet] = {
    s.name: s
    for s in (
        FeatureSet(
            "momentum_v1",
            1,
            (
                "rsi_14",
                "sma_20",
                "ema_20",
                "macd_12_26_9",
                "macds_12_26_9",
                "atr_14",
                "bbu_20_2",
                "bbl_20_2",
                "logret_1",
                "vol_20",
            ),
            "momentum, trend and volatility for bar-level models",
        ),
        FeatureSet(
            "trend_v1",
            1,
            ("ret_1", "adx_14", "dmp_14", "dmn_14", "stochk_14_3_3", "stochd_14_3_3", "obv", "vwap_d", "zscore_20"),
            "directional movement, oscillators and volume",
        ),
    )
}


def feature_set(name: str) -> FeatureSet:
    """The set called ``name``; raises ValidationError for an unknown one."""
    fs = FEATURE_SETS.get(name)
    if fs is None:
        raise ValidationError(f"feature set {name!r} is not known: use one of {', '.join(FEATURE_SETS)}")
    return fs


def variant(adjust: str | Adjust | None, view: str | View | None) -> str:
    """The variant of a set computed over back-adjusted continuous series (:mod:`hdi_lab.features.continuous`):
    ``""`` without ``adjust`` (the per-instrument table), ``"none"`` (raw contracts: both views are the same
    values), else ``"<adjust>_<view>"`` (``ratio_research``, ``difference_as_of``); ``view`` defaults to
    research.

    Raises ValidationError for an unknown adjust or view, or a view without adjust."""
    if adjust is None:
        if view is not None:
            raise ValidationError(
                f"view={str(view)!r} applies to back-adjusted continuous series: pass adjust= too "
                "(e.g. adjust='ratio', view='as_of')"
            )
        return ""
    how = parse_enum(Adjust, adjust, "adjust")
    seen = parse_enum(View, view, "view") if view is not None else View.RESEARCH
    return how.value if how is Adjust.NONE else f"{how.value}_{seen.value}"


def table_name(set_name: str, interval: str, variant: str = "") -> str:
    """The table holding ``set_name`` at ``interval`` (unqualified; it lives in the hdi_lab schema), of
    ``variant`` (see :func:`variant`; ``features_momentum_v1_1d_ratio_research``).

    Raises ValidationError for an unknown set or interval.
    """
    base = f"features_{feature_set(set_name).name}_{check_interval(interval)}"
    return f"{base}_{variant}" if variant else base


def state_table_name(set_name: str, interval: str) -> str:
    """The table of saved indicator states next to :func:`table_name` (``features_state_momentum_v1_1d``).

    Raises ValidationError for an unknown set or interval.
    """
    return f"features_state_{feature_set(set_name).name}_{check_interval(interval)}"


def feature_table(fs: FeatureSet, interval: str, variant: str = "") -> FeatureTable:
    """Where ``fs`` at ``interval`` (of ``variant``, see :func:`variant`) is stored, for
    :mod:`hdi_lab.storage.features`. A variant keeps no indicator states (its series are computed from
    their first bar)."""
    return FeatureTable(
        table_name(fs.name, interval, variant),
        state_table_name(fs.name, interval) + (f"_{variant}" if variant else ""),
        fs.name,
        fs.version,
        interval,
        tuple(c.name for c in fs.resolved),
        fs.definition(),
        variant,
    )
