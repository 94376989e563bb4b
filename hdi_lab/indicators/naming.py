"""Column names: ``<output>_<param>_<param>...`` parsed into :class:`Column` and built from parameters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hdi_lab.errors import ValidationError
from hdi_lab.indicators.catalogue import CATALOGUE, OUTPUTS
from hdi_lab.indicators.entry import Param, ParamValue, label, param_text

__all__ = ["Column", "as_columns", "column", "columns", "make_column", "min_bars"]


@dataclass(frozen=True)
class Column:
    """One output of one indicator with all its parameters: ``column("rsi_14")``."""

    name: str
    indicator: str
    output: str
    params: tuple[tuple[str, ParamValue], ...]

    @property
    def warmup(self) -> int:
        """Leading bars without a value."""
        spec = CATALOGUE[self.indicator]
        return spec.warmup(dict(self.params))[self.output]

    @property
    def inputs(self) -> tuple[str, ...]:
        return CATALOGUE[self.indicator].inputs

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "indicator": self.indicator,
            "output": self.output,
            "params": dict(self.params),
            "warmup": self.warmup,
        }


def _value(indicator: str, p: Param, raw: object) -> ParamValue:
    """A parameter value checked against its kind and bounds (text from a column name is accepted)."""
    where = f"{indicator} parameter {p.name}"
    if p.choices:
        text = str(raw).lower()
        if text not in p.choices:
            raise ValidationError(f"{where}={raw!r} is not valid: use one of {', '.join(p.choices)}")
        return text
    try:
        if isinstance(p.default, int):
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value: int | float = int(raw)  # type: ignore[call-overload]
        else:
            value = float(raw.replace("p", ".")) if isinstance(raw, str) else float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        kind = "a whole number" if isinstance(p.default, int) else "a number"
        raise ValidationError(f"{where}={raw!r} is not valid: use {kind}, e.g. {param_text(p.default)}") from None
    if p.minimum is not None and value < p.minimum:
        raise ValidationError(f"{where}={raw!r} is not valid: it must be >= {param_text(p.minimum)}")
    return value


def make_column(indicator: str, output: str | None = None, **params: object) -> Column:
    """The column for ``indicator`` (its first output unless ``output`` is given) with named params.

    Raises:
        ValidationError: unknown indicator, output or parameter, or a parameter value out of bounds.
    """
    spec = CATALOGUE.get(indicator)
    if spec is None:
        raise ValidationError(f"indicator {indicator!r} is not known: use one of {', '.join(CATALOGUE)}")
    out = output or spec.outputs[0]
    if out not in spec.outputs:
        raise ValidationError(f"{indicator} has no output {out!r}: use one of {', '.join(spec.outputs)}")
    names = [p.name for p in spec.params]
    unknown = [k for k in params if k not in names]
    if unknown:
        allowed = ", ".join(names) if names else "none"
        raise ValidationError(f"{indicator} has no parameter {', '.join(unknown)}: its parameters are {allowed}")
    values = tuple((p.name, _value(indicator, p, params.get(p.name, p.default))) for p in spec.params)
    if spec.check is not None:
        spec.check(dict(values))
    return Column(label(out, (v for _, v in values)), indicator, out, values)


_NAME = re.compile(r"^[a-z]+(_[0-9a-z]+)*$")


def column(spec: str | Column) -> Column:
    """Parse a column name such as ``rsi_14``, ``macds_12_26_9``, ``bbu_20_2`` or ``sma``.

    Raises:
        ValidationError: the name is malformed or names an unknown output, or a parameter is not valid.
    """
    if isinstance(spec, Column):
        return spec
    text = str(spec).strip().lower()
    if not _NAME.match(text):
        raise ValidationError(f"indicator column {spec!r} is not valid: write <output>_<params>, e.g. rsi_14")
    head, *args = text.split("_")
    indicator = OUTPUTS.get(head)
    if indicator is None:
        raise ValidationError(f"indicator {head!r} (in {spec!r}) is not known: use one of {', '.join(OUTPUTS)}")
    params = CATALOGUE[indicator].params
    if len(args) > len(params):
        order = "_".join(p.name for p in params) or "no parameters"
        raise ValidationError(f"{spec!r} has too many parameters: {head} takes {order}")
    return make_column(indicator, head, **{p.name: a for p, a in zip(params, args, strict=False)})


def columns(specs: str | Iterable[str | Column]) -> tuple[Column, ...]:
    """Parse a comma-separated string or a sequence of names; duplicates are dropped.

    Raises:
        ValidationError: no column given, or one is not valid (see :func:`column`).
    """
    items = [s for s in specs.split(",") if s.strip()] if isinstance(specs, str) else list(specs)
    if not items:
        raise ValidationError("no indicator columns given: e.g. rsi_14,sma_20")
    return tuple({c.name: c for c in map(column, items)}.values())


def as_columns(cols: str | Iterable[str | Column]) -> tuple[Column, ...]:
    """``cols`` as the computations take them: a comma-separated string parsed by :func:`columns`, or
    names and :class:`Column` objects parsed one by one, in order.

    Raises:
        ValidationError: a column is not valid (see :func:`column`), or a string names none.
    """
    return columns(cols) if isinstance(cols, str) else tuple(column(c) for c in cols)


def min_bars(cols: Iterable[Column]) -> int:
    """Bars needed before every column has its first value."""
    return max((c.warmup for c in cols), default=0) + 1
