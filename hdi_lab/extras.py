"""Optional dependencies: import them on first use with a message naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from hdi_lab.errors import MissingDependency

__all__ = ["EXTRAS", "require"]

#: module -> the hdi_lab extra that installs it
EXTRAS: dict[str, str] = {
    "ib_async": "ib",
    "ib_insync": "ib-insync",
    "pandas_ta": "ta",
    "feast": "feast",
    "ipywidgets": "notebook",
    "IPython": "notebook",
    "plotly": "notebook",
    "anywidget": "notebook",
    "apscheduler": "scheduler",
    "sqlalchemy": "scheduler",
    "polars": "polars",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependency naming ``pip install 'hdi_lab[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, extra or EXTRAS.get(module.split(".", maxsplit=1)[0], "all")) from exc
