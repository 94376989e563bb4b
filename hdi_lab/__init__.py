"""hdi_lab: historical market data from Databento and Interactive Brokers into PostgreSQL/TimescaleDB.

>>> import hdi_lab
>>> hdi_lab.ingest(provider="sample", schema="ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
>>> hdi_lab.query("ohlcv-1m", symbols=["ESH4"], start="2024-01-02", end="2024-01-05")
"""

from __future__ import annotations

import logging

from hdi_lab.api import ingest, query, sql
from hdi_lab.config import Settings, load_settings
from hdi_lab.errors import (
    ConfigError,
    DataFormatError,
    HdiError,
    MissingDependency,
    ProviderError,
    StorageError,
    ValidationError,
)
from hdi_lab.schemas import IngestReport, IngestRequest, Schema, SType
from hdi_lab.session import HdiSession

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
    "ValidationError",
    "enable_logging",
    "ingest",
    "load_settings",
    "query",
    "sql",
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
