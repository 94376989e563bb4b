"""The hdi_lab exception tree.

::

    HdiError
    ├── ConfigError            a setting is missing, unknown or malformed
    ├── MissingDependency      an optional extra is not installed (also an ImportError)
    ├── ValidationError        a request is wrong: unknown schema or symbol, start >= end, ...
    │   └── CostLimitError       a request's estimated cost is above the configured limit
    ├── DataFormatError        input bytes are not valid DBN: corrupt, truncated, wrong schema
    │   └── IngestError          some chunks (files) of an ingest had bad data, the others were stored (.report)
    ├── ProviderError          a data vendor failed (carries provider, status, request_id)
    │   ├── AuthError
    │   ├── RateLimitError
    │   └── UnavailableError
    └── StorageError           the database failed or refused (carries sqlstate)
        └── EmbeddedServerError   the embedded PostgreSQL could not be started or stopped

Every message says what was wrong and what to do about it. Library code raises; only the
front ends (CLI, magics) turn these into short messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hdi_lab.schemas import IngestReport

__all__ = [
    "AuthError",
    "ClusterError",
    "ConfigError",
    "CostLimitError",
    "DataFormatError",
    "EmbeddedServerError",
    "HdiError",
    "IngestError",
    "MissingDependency",
    "ProviderError",
    "RateLimitError",
    "StorageError",
    "UnavailableError",
    "ValidationError",
    "first_line",
]


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (a PostgreSQL driver's ``pgerror`` when it has one), or its
    type name: what a one-line message quotes of an error from a library."""
    text = (getattr(exc, "pgerror", None) or str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HdiError(Exception):
    """Root of all hdi_lab errors."""


class ConfigError(HdiError):
    """A setting is missing, unknown or malformed."""


class MissingDependency(HdiError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(f"{module} is not installed: install it with `pip install 'hdi_lab[{extra}]'`")


class ValidationError(HdiError):
    """A request is invalid (unknown schema, symbol, dataset, bad time range, ...)."""


class CostLimitError(ValidationError):
    """A request's estimated cost is above the configured limit (override: allow_cost)."""


class DataFormatError(HdiError):
    """Input data is not valid DBN (corrupt, truncated, not DBN, unsupported schema)."""


class IngestError(DataFormatError):
    """Some chunks (files) of an ingest held bad data and failed, the others were stored;
    ``report`` gives each chunk's outcome."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


class ProviderError(HdiError):
    """A data provider failed."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.request_id = request_id


class AuthError(ProviderError):
    """The provider rejected the credentials."""


class RateLimitError(ProviderError):
    """The provider throttled the request and retries were exhausted."""


class UnavailableError(ProviderError):
    """The provider could not be reached or failed on its side."""


class ClusterError(HdiError):
    """The Dask cluster of ``executor="dask"`` could not be reached, or lost a chunk's work too often."""


class StorageError(HdiError):
    """The database failed or refused an operation."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class EmbeddedServerError(StorageError):
    """The embedded PostgreSQL server could not be started, reached or stopped."""
