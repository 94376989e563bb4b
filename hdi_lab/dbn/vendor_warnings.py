"""Capturing the ``databento`` client's warnings without losing anybody else's.

The client reports vendor notices (the ``X-Warning`` header: partial symbol resolution, degraded
data) and decoder problems through :mod:`warnings`. ``warnings.catch_warnings`` swaps process-wide
state (until Python 3.14's context-aware warnings), so captures are serialised by one lock, and
warnings of other categories caught in the window (possibly raised by another thread, e.g. the
chunk being loaded while the next one downloads) are re-issued afterwards, not swallowed.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

from databento.common.error import BentoWarning

__all__ = ["call"]

_LOCK = threading.RLock()


def call[T](fn: Callable[[], T], vendor: type[Warning] = BentoWarning) -> tuple[T, list[str]]:
    """``fn()`` and the messages of the ``vendor`` warnings it issued (other warnings are re-issued)."""
    with _LOCK:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = fn()
            finally:
                others = [w for w in caught if not issubclass(w.category, vendor)]
        for w in others:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno or 0, source=w.source)
    return out, [str(w.message) for w in caught if issubclass(w.category, vendor)]
