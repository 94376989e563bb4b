"""The ``hdi`` command line lives in :mod:`hdi_lab.frontend.cli`; this documented path (``hdi_lab.cli:main``,
``python -m hdi_lab.cli``) keeps working."""

from __future__ import annotations

from hdi_lab.frontend.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
