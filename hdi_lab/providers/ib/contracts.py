"""IB contracts: the ``SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY[:EXPIRY]]]`` text form, qualified contracts
and their instrument-definition records.

Examples: ``AAPL:STK:SMART:USD``, ``ES:FUT:CME:USD:202403``, ``ES:CONTFUT:CME``,
``EUR:CASH:IDEALPRO:USD``, ``SPX:IND:CBOE:USD``. A qualified contract (:class:`IbInstrument`) carries
IB's identity (conId, secType, exchange, currency, lastTradeDateOrContractMonth, multiplier,
localSymbol, tradingClass); its definition record puts what fits into DBN's fields:

=====================  =====================================================
DBN field              IB field
=====================  =====================================================
instrument_id          conId
raw_symbol             localSymbol (e.g. ``ESH4``; the query symbol)
asset / underlying     symbol
group                  tradingClass
security_type          secType
exchange               exchange (DBN keeps 5 characters: ``IDEALPRO`` -> ``IDEAL``)
currency               currency
expiration             lastTradeDateOrContractMonth (last trade date, 00:00 UTC)
contract_multiplier    multiplier (integer part; ``unit_of_measure_qty`` keeps it exactly, 1e-9)
min_price_increment    minTick (1e-9)
=====================  =====================================================

The full identity is also kept in the symbology as the qualified contract text
(``ES:FUT:CME:USD:20240315``), next to the text the user asked for.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
from numpy.typing import NDArray

from hdi_lab.dbn.writer import empty_records
from hdi_lab.errors import ValidationError
from hdi_lab.schemas import Schema, SType

__all__ = [
    "SEC_TYPES",
    "ContractSpec",
    "IbInstrument",
    "definition_record",
    "fixed",
    "front_segments",
    "parse_contract",
]

SEC_TYPES = ("STK", "FUT", "CONTFUT", "CASH", "IND")
_DEFAULTS = {  # (exchange, currency) when left out
    "STK": ("SMART", "USD"),
    "FUT": ("", ""),
    "CONTFUT": ("", ""),
    "CASH": ("IDEALPRO", ""),
    "IND": ("", "USD"),
}
_CLASS = {"STK": b"K", "FUT": b"F", "CONTFUT": b"F", "CASH": b"X", "IND": b"K"}
_EXPIRY = re.compile(r"^\d{6}(\d{2})?$")
_EXAMPLES = "AAPL:STK:SMART:USD, ES:FUT:CME:USD:202403, ES:CONTFUT:CME, EUR:CASH:IDEALPRO:USD"


@dataclass(frozen=True)
class ContractSpec:
    """A contract as the user wrote it (parsed and normalised)."""

    text: str  # as given (stripped): the symbol stored in the symbology
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    expiry: str

    @property
    def continuous(self) -> bool:
        return self.sec_type == "CONTFUT"

    @property
    def stype(self) -> SType:
        return SType.CONTINUOUS if self.continuous else SType.RAW_SYMBOL

    def ib_contract(self, lib: Any, *, include_expired: bool = True) -> Any:
        """The ``Contract`` of the IB client library ``lib`` (ib_async or ib_insync).

        A continuous future is looked up as its futures chain (every expiry, expired ones too):
        :func:`front_segments` then picks the front contract of each day.
        """
        sec_type = "FUT" if self.continuous else self.sec_type
        return lib.Contract(
            symbol=self.symbol,
            secType=sec_type,
            exchange=self.exchange,
            currency=self.currency,
            lastTradeDateOrContractMonth=self.expiry,
            includeExpired=include_expired and sec_type == "FUT",
        )


def parse_contract(text: str) -> ContractSpec:
    """Parse ``SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY[:EXPIRY]]]``; raises ValidationError naming the problem."""
    raw = str(text).strip()
    parts = [p.strip() for p in raw.split(":")]
    if len(parts) < 2 or len(parts) > 5 or not parts[0]:
        raise ValidationError(
            f"IB contract {text!r} is not SYMBOL:SECTYPE[:EXCHANGE[:CURRENCY[:EXPIRY]]]: e.g. {_EXAMPLES}"
        )
    symbol, sec_type = parts[0].upper(), parts[1].upper()
    if sec_type not in SEC_TYPES:
        raise ValidationError(
            f"IB contract {text!r}: security type {parts[1]!r} is not supported: use one of {', '.join(SEC_TYPES)}"
        )
    ex_default, cur_default = _DEFAULTS[sec_type]
    exchange = (parts[2] if len(parts) > 2 else "").upper() or ex_default
    currency = (parts[3] if len(parts) > 3 else "").upper() or cur_default
    expiry = parts[4] if len(parts) > 4 else ""
    if sec_type in ("FUT", "CONTFUT", "IND") and not exchange:
        raise ValidationError(f"IB contract {text!r}: a {sec_type} needs an exchange, e.g. ES:{sec_type}:CME")
    if sec_type == "CASH" and not currency:
        raise ValidationError(f"IB contract {text!r}: FX needs the quote currency, e.g. EUR:CASH:IDEALPRO:USD")
    if sec_type == "FUT" and not expiry:
        raise ValidationError(
            f"IB contract {text!r}: a future needs an expiry (YYYYMM or YYYYMMDD), e.g. "
            f"{symbol}:FUT:{exchange}:{currency or 'USD'}:202403, or use {symbol}:CONTFUT:{exchange}"
        )
    if expiry and (sec_type != "FUT" or not _EXPIRY.match(expiry)):
        raise ValidationError(f"IB contract {text!r}: expiry {expiry!r} is only for FUT and must be YYYYMM or YYYYMMDD")
    return ContractSpec(raw, symbol, sec_type, exchange, currency, expiry)


@dataclass(frozen=True)
class IbInstrument:
    """A qualified IB contract: its IB identity plus what its definition record needs."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    last_trade: str  # lastTradeDateOrContractMonth as IB sent it (YYYYMMDD for futures)
    multiplier: str
    local_symbol: str
    trading_class: str
    min_tick: float = 0.0
    time_zone: str = ""

    @classmethod
    def from_details(cls, details: Any) -> IbInstrument:
        c = details.contract
        return cls(
            int(c.conId),
            c.symbol,
            c.secType,
            c.exchange,
            c.primaryExchange or "",
            c.currency,
            c.lastTradeDateOrContractMonth or "",
            str(c.multiplier or ""),
            c.localSymbol or "",
            c.tradingClass or "",
            float(details.minTick or 0.0),
            details.timeZoneId or "",
        )

    @property
    def expiry(self) -> dt.date | None:
        """Last trade date (futures), else None."""
        if len(self.last_trade) >= 8 and self.last_trade[:8].isdigit():
            return dt.date(int(self.last_trade[:4]), int(self.last_trade[4:6]), int(self.last_trade[6:8]))
        return None

    @property
    def text(self) -> str:
        """The qualified contract in the text form (full exchange and last trade date)."""
        parts = [self.symbol, self.sec_type, self.exchange, self.currency]
        if self.sec_type == "FUT":
            parts.append(self.last_trade[:8])
        return ":".join(parts)

    def ib_contract(self, lib: Any) -> Any:
        """A Contract by conId (what historical requests need), expired contracts included."""
        return lib.Contract(
            conId=self.con_id,
            symbol=self.symbol,
            secType=self.sec_type,
            exchange=self.exchange,
            currency=self.currency,
            lastTradeDateOrContractMonth=self.last_trade,
            localSymbol=self.local_symbol,
            tradingClass=self.trading_class,
            multiplier=self.multiplier,
            includeExpired=self.sec_type == "FUT",
        )


def fixed(value: float | str | Decimal) -> int:
    """A decimal number as int64 fixed-point 1e-9, rounded half away from zero on its decimal text
    (so 4712.25 -> 4712250000000 exactly and 1.1 -> 1100000000, never 1099999999).

    Raises ValidationError when ``value`` is not a number."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise ValidationError(f"IB sent a price that is not a number: {value!r}") from None
    return int((d * 1_000_000_000).to_integral_value(rounding="ROUND_HALF_UP"))


def definition_record(inst: IbInstrument, *, publisher_id: int, ts_ns: int) -> NDArray[Any]:
    """The instrument's DBN definition record (``ts_recv`` = ``ts_event`` = ``ts_ns``)."""
    rec = empty_records(Schema.DEFINITION, 1)
    rec["publisher_id"] = publisher_id
    rec["instrument_id"] = inst.con_id
    rec["ts_event"] = ts_ns
    rec["ts_recv"] = ts_ns
    rec["raw_symbol"] = (inst.local_symbol or inst.symbol).encode()
    rec["asset"] = inst.symbol.encode()[:11]
    rec["underlying"] = inst.symbol.encode()[:21]
    rec["group"] = inst.trading_class.encode()[:21]
    rec["security_type"] = inst.sec_type.encode()[:7]
    rec["exchange"] = inst.exchange.encode()[:5]
    rec["currency"] = inst.currency.encode()[:4]
    rec["instrument_class"] = _CLASS.get(inst.sec_type, b"K")
    rec["security_update_action"] = b"A"
    if inst.min_tick > 0:
        rec["min_price_increment"] = fixed(inst.min_tick)
    if inst.multiplier:
        try:
            mult = Decimal(inst.multiplier)
            rec["contract_multiplier"] = int(mult)
            rec["unit_of_measure_qty"] = fixed(mult)
        except InvalidOperation:
            pass
    exp = inst.expiry
    if exp is not None and inst.sec_type == "FUT":
        rec["expiration"] = pd.Timestamp(exp, tz="UTC").value
        rec["maturity_year"] = exp.year
        rec["maturity_month"] = exp.month
        rec["maturity_day"] = exp.day
    return rec


def front_segments(chain: list[IbInstrument], lo: dt.date, hi: dt.date) -> list[tuple[dt.date, dt.date, IbInstrument]]:
    """Days ``[lo, hi)`` split by front contract: on each day the front is the contract with the
    earliest last trade date on or after that day (it rolls the day after expiry)."""
    dated = sorted((i for i in chain if i.expiry is not None), key=lambda i: (i.expiry, i.con_id))
    out: list[tuple[dt.date, dt.date, IbInstrument]] = []
    day = lo
    for inst in dated:
        exp = inst.expiry
        assert exp is not None
        if exp < day:
            continue
        end = min(hi, exp + dt.timedelta(days=1))
        if day < end:
            out.append((day, end, inst))
            day = end
        if day >= hi:
            break
    return out
