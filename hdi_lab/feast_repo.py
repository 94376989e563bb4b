"""The Feast repository glue lives in :mod:`hdi_lab.featurestore.repo`; this path keeps working for feature
repos copied before the move (their ``definitions.py`` imports ``repo_declarations`` from here)."""

from __future__ import annotations

from hdi_lab.featurestore.repo import default_repo, repo_declarations

__all__ = ["default_repo", "repo_declarations"]
