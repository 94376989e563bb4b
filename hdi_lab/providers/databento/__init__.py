"""Databento: the Historical API provider (:mod:`.provider`) and its HTTP client (:mod:`.http`)."""
