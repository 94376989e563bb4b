"""The progress bar the front ends show during an ingest, fed by the core's Progress events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from hdi_lab.schemas import Progress

__all__ = ["progress_bar"]


def progress_bar(
    enabled: bool,
    desc: str,
    file: TextIO | None = None,
    unit: str = "chunk",
) -> tuple[Callable[[Progress], None] | None, Callable[[], None]]:
    """(callback, close) for a tqdm.auto bar counting ``unit`` (chunks of an ingest, days of an export): a widget
    in Jupyter, text on ``file`` elsewhere."""
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}

    def update(ev: Progress) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=ev.total, unit=unit, desc=desc, file=file, leave=False, dynamic_ncols=True)
        bar["bar"].update(ev.done - bar["bar"].n)
        bar["bar"].set_postfix(rows=ev.rows)

    return update, lambda: bar["bar"].close() if "bar" in bar else None
