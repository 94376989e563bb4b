"""The read path's row bookkeeping, without a database: the order check agrees with a full lexicographic sort, and
each row's (publisher, instrument) code, found from its span without hashing the rows, names its own pair."""

from __future__ import annotations

import numpy as np
import pytest

from hdi_lab.storage import read, scan

pytestmark = pytest.mark.unit


def test_the_order_check_agrees_with_a_lexicographic_sort() -> None:
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(400):
        n = int(rng.integers(0, 12))
        keys = [np.sort(rng.integers(0, 3, n)) if rng.random() < 0.5 else rng.integers(0, 3, n) for _ in range(3)]
        rows = list(zip(*(k.tolist() for k in keys), strict=True))
        expected = rows == sorted(rows)
        seen.add(expected)
        assert scan.ordered(keys) == expected, keys
    assert seen == {True, False}


def test_each_rows_owner_code_names_its_publisher_and_instrument() -> None:
    rng = np.random.default_rng(5)
    for publishers_present in ([1], [1, 7], [2, 40, 9001]):
        iid_of = np.array([10, 11, 10, 4_294_967_295, 12], dtype=np.int64)  # a shared instrument, a uint32 id
        span = np.sort(rng.integers(0, len(iid_of), 500)).astype(np.intp)
        publisher = rng.choice(np.array(publishers_present, dtype=np.uint16), 500)
        code, pairs = read._owners(span, iid_of, publisher, np.array(publishers_present, dtype=np.intp))
        assert len(set(pairs.tolist())) == len(pairs)  # each pair once
        expected = (publisher.astype(np.int64) << 32) | iid_of[span]
        assert (pairs[code] == expected).all()
