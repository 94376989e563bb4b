"""Resolving user symbols (raw, parent, continuous) to instrument ids as of each date: the queries
live in :mod:`hdi_lab.storage.symbology`; this path keeps working."""

from __future__ import annotations

from hdi_lab.storage.symbology import Span, resolve

__all__ = ["Span", "resolve"]
