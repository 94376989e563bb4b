"""Moved to :mod:`hdi_lab.dbn.writer`; this path keeps working as a re-export."""

from __future__ import annotations

from hdi_lab.dbn.writer import *  # noqa: F403  (the public names, as writer's __all__ declares them)
from hdi_lab.dbn.writer import __all__ as __all__
