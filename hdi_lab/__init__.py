"""hdi_lab: historical market data from Databento and Interactive Brokers into PostgreSQL/TimescaleDB.

>>> import hdi_lab
>>> hdi_lab.ingest(provider="sample", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
>>> hdi_lab.query("ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
"""

from __future__ import annotations

import importlib
import logging
import typing

from hdi_lab.errors import (
    ConfigError,
    DataFormatError,
    HdiError,
    MissingDependency,
    ProviderError,
    StorageError,
    ValidationError,
)

if typing.TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from hdi_lab.api import (
        continuous,
        export,
        gaps,
        ingest,
        query,
        report,
        rolls,
        sql,
        unwatch,
        update,
        watch,
        watches,
    )
    from hdi_lab.config import Settings, load_settings
    from hdi_lab.core.session import HdiSession
    from hdi_lab.core.subscriptions import Subscription
    from hdi_lab.core.update import UpdateReport
    from hdi_lab.schemas import IngestReport, IngestRequest, Schema, SType

# Loaded on first use (PEP 562), so `import hdi_lab` and `%load_ext hdi_lab` stay fast.
_LAZY = {
    "continuous": "hdi_lab.api",
    "export": "hdi_lab.api",
    "gaps": "hdi_lab.api",
    "ingest": "hdi_lab.api",
    "query": "hdi_lab.api",
    "report": "hdi_lab.api",
    "rolls": "hdi_lab.api",
    "sql": "hdi_lab.api",
    "watch": "hdi_lab.api",
    "watches": "hdi_lab.api",
    "unwatch": "hdi_lab.api",
    "update": "hdi_lab.api",
    "UpdateReport": "hdi_lab.core.update",
    "Settings": "hdi_lab.config",
    "load_settings": "hdi_lab.config",
    "IngestReport": "hdi_lab.schemas",
    "IngestRequest": "hdi_lab.schemas",
    "Schema": "hdi_lab.schemas",
    "SType": "hdi_lab.schemas",
    "HdiSession": "hdi_lab.core.session",
    "Subscription": "hdi_lab.core.subscriptions",
}


#: submodules reachable as attributes without an import (``hdi_lab.features.compute(...)``)
_SUBMODULES = ("features", "indicators")


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"hdi_lab.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdi_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "ConfigError",
    "DataFormatError",
    "HdiError",
    "HdiSession",
    "IngestReport",
    "IngestRequest",
    "MissingDependency",
    "ProviderError",
    "SType",
    "Schema",
    "Settings",
    "StorageError",
    "Subscription",
    "UpdateReport",
    "ValidationError",
    "continuous",
    "enable_logging",
    "export",
    "gaps",
    "ingest",
    "load_ipython_extension",
    "load_settings",
    "query",
    "report",
    "rolls",
    "sql",
    "unload_ipython_extension",
    "unwatch",
    "update",
    "watch",
    "watches",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def enable_logging(level: int | str = logging.INFO) -> None:
    """Send hdi_lab's log records to stderr (logging is opt-in)."""
    logger = logging.getLogger(__name__)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def load_ipython_extension(ip: InteractiveShell) -> None:
    """``%load_ext hdi_lab``: register the magics (%hdi_ingest, %hdi_query, ...; see hdi_lab.frontend.magics).

    Loading again changes nothing; nothing is read or connected until a magic first runs.
    """
    from hdi_lab.frontend.magics import load

    load(ip)


def unload_ipython_extension(ip: InteractiveShell) -> None:
    """``%unload_ext hdi_lab``: unregister the magics and close their database connections."""
    from hdi_lab.frontend.magics import unload

    unload(ip)
