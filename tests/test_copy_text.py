"""storage.copy.encode with text columns (the symbol of feature rows): parsed back field by field, and
COPYed into a real table."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from hdi_lab.core.session import HdiSession
from hdi_lab.storage import copy
from hdi_lab.storage.db import transaction

SYMBOLS = ["AAPL", "", "ESH4", "BRK.B", "ÄÖÜ", "X"]  # widths 4, 0, 4, 5, 6 (UTF-8), 1


def columns(n: int = 12) -> tuple[list[str], list[npt.NDArray[Any]], dict[int, npt.NDArray[Any]]]:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, len(SYMBOLS), n)
    text = np.array([s.encode() for s in SYMBOLS], dtype=np.bytes_)[codes]
    floats = rng.normal(size=n)
    nulls = {1: np.arange(n) % 4 == 1, 2: np.arange(n) % 5 == 2}
    return ["int8", "text", "float8"], [np.arange(n, dtype=np.int64), text, floats], nulls


def parse(buf: bytes, pgtypes: list[str]) -> list[tuple[Any, ...]]:
    """A plain reference parser of binary COPY (one row at a time)."""
    assert buf.startswith(copy.HEADER) and buf.endswith(copy.TRAILER)
    pos, end, out = len(copy.HEADER), len(buf) - len(copy.TRAILER), []
    while pos < end:
        (n,), pos = struct.unpack_from(">h", buf, pos), pos + 2
        assert n == len(pgtypes)
        row: list[object] = []
        for t in pgtypes:
            (size,), pos = struct.unpack_from(">i", buf, pos), pos + 4
            if size == -1:
                row.append(None)
                continue
            raw, pos = buf[pos : pos + size], pos + size
            row.append(raw.decode() if t == "text" else struct.unpack(">q" if t == "int8" else ">d", raw)[0])
        out.append(tuple(row))
    return out


def expected(values: list[npt.NDArray[Any]], nulls: dict[int, npt.NDArray[Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            int(values[0][r]),
            None if nulls[1][r] else values[1][r].decode(),
            None if nulls[2][r] else float(values[2][r]),
        )
        for r in range(len(values[0]))
    ]


@pytest.mark.unit
def test_text_columns_of_several_widths_with_nulls_encode_every_row() -> None:
    pgtypes, values, nulls = columns()
    got = parse(copy.encode(pgtypes, values, nulls), pgtypes)
    assert sorted(got, key=lambda r: r[0]) == expected(values, nulls)  # grouped by width: order is not kept
    no_nulls = parse(copy.encode(pgtypes, values), pgtypes)
    assert sorted(no_nulls, key=lambda r: r[0]) == expected(values, {1: nulls[1] & False, 2: nulls[2] & False})


@pytest.mark.unit
def test_fixed_width_columns_keep_their_order() -> None:
    values = [np.arange(6, dtype=np.int64), np.linspace(0, 1, 6)]
    nulls = {1: np.array([False, True, False, False, True, False])}
    got = parse(copy.encode(["int8", "float8"], values, nulls), ["int8", "float8"])
    assert got == [(r, None if nulls[1][r] else float(values[1][r])) for r in range(6)]


@pytest.mark.integration
def test_text_rows_copy_into_a_table(session: HdiSession) -> None:
    pgtypes, values, nulls = columns(200)
    conn = session.connection()
    with transaction(conn) as cur:
        cur.execute(f'CREATE TABLE "{session.schema}".copy_text (id bigint, symbol text, value float8)')
        copy.copy_in(
            cur, f'"{session.schema}".copy_text', ["id", "symbol", "value"], copy.encode(pgtypes, values, nulls)
        )
        cur.execute(f'SELECT id, symbol, value FROM "{session.schema}".copy_text ORDER BY id')
        got = [tuple(r) for r in cur.fetchall()]
    assert got == expected(values, nulls)
    assert pd.Series([r[1] for r in got]).dropna().isin(SYMBOLS).all()
