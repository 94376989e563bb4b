"""The ipywidgets live in :mod:`hdi_lab.frontend.widgets`; this documented path keeps working."""

from __future__ import annotations

from hdi_lab.frontend.widgets import *  # noqa: F403  (the public names, as widgets' __all__ declares them)
from hdi_lab.frontend.widgets import __all__ as __all__
