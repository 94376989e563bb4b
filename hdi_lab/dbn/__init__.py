"""DBN: reading Databento's binary format (:mod:`.decoder`) and writing it (:mod:`.writer`).

Nothing here imports storage, providers or the core: providers and storage import this package.
``from hdi_lab import dbn`` gives the decoding API (``dbn.open_store``, ``dbn.decode``, ...), loaded
on first use (PEP 562) so that importing the constants below does not load the decoder.
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
    from hdi_lab.dbn.decoder import (
        UNSUPPORTED,
        Decoded,
        Mapping,
        ZstdStream,
        check_headers,
        decode,
        first_bad,
        mappings_of,
        open_store,
        read_full,
        record_layout,
        record_to_json,
        records_from_json,
        schema_of,
        store_from_bytes,
        stream,
        streamable,
        stype_of,
        truncated_message,
        unfinished_zstd,
    )

#: DBN's UNDEF sentinels of 64-bit fields (``UNDEF_PRICE`` is ``INT64_MAX``); storage maps them to NULL.
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

__all__ = [
    "INT64_MAX",
    "UINT64_MAX",
    "UNSUPPORTED",
    "Decoded",
    "Mapping",
    "ZstdStream",
    "check_headers",
    "decode",
    "first_bad",
    "mappings_of",
    "open_store",
    "read_full",
    "record_layout",
    "record_to_json",
    "records_from_json",
    "schema_of",
    "store_from_bytes",
    "stream",
    "streamable",
    "stype_of",
    "truncated_message",
    "unfinished_zstd",
]

#: names loaded from the decoder on first use
_DECODER = frozenset(__all__) - {"INT64_MAX", "UINT64_MAX"}


def __getattr__(name: str) -> object:
    if name in _DECODER:
        value = getattr(importlib.import_module("hdi_lab.dbn.decoder"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdi_lab.dbn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DECODER))
