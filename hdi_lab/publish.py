"""Publishing feature sets to Feast lives in :mod:`hdi_lab.featurestore.publish`; this documented path keeps
working."""

from __future__ import annotations

from hdi_lab.featurestore.publish import *  # noqa: F403  (the public names, as publish's __all__ declares them)
from hdi_lab.featurestore.publish import __all__ as __all__
