"""How the magics' results look in IPython and Jupyter: truncated frames, status and config views.
Rendering only: nothing here reads the database or the environment."""

from __future__ import annotations

import html
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

__all__ = ["ConfigView", "FrameDisplay", "RootWidget", "StatusView", "frame_options"]


if TYPE_CHECKING:  # pandas is imported when a frame is first shown: loading the extension stays fast
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.lib.pretty import RepresentationPrinter

    from hdi_lab.core.catalog import ServerInfo, Status

_MIMES = ("text/html", "text/plain")


@contextmanager
def frame_options(rows: int) -> Iterator[None]:
    """pandas display options for one rendering: at most ``rows`` rows (head and tail), 30 columns."""
    import pandas as pd

    n = max(int(rows), 2)
    with pd.option_context(
        "display.max_rows",
        n,
        "display.min_rows",
        n,
        "display.max_columns",
        30,
        "display.width",
        200,
        "display.show_dimensions",
        "truncate",
    ):
        yield


class RootWidget:
    """A page of ipywidgets shown through its root container ``_root`` (set by the subclass): in a notebook,
    in Voila, or inside a layout of yours (:attr:`widget`)."""

    _root: Any

    @property
    def widget(self) -> Any:
        """The root ipywidgets container (display it, or put it in your own layout)."""
        return self._root

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._root)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self._root._repr_mimebundle_(**kwargs)


class FrameDisplay:
    """Shows the DataFrames a magic returned with at most ``rows()`` rows; any other frame as before.

    The frames are remembered by weak reference (never modified); the IPython formatters for
    DataFrame are installed on first use and restored by :meth:`uninstall`.
    """

    def __init__(self, shell: InteractiveShell, rows: Callable[[], int]) -> None:
        self._shell = shell
        self._rows = rows
        self._frames: dict[int, weakref.ref[pd.DataFrame]] = {}
        self._old: dict[str, Any] | None = None

    def track(self, frame: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        if self._old is None:
            fmts = self._formatters()
            self._old = {
                "text/html": fmts["text/html"].for_type(pd.DataFrame, self._html),
                "text/plain": fmts["text/plain"].for_type(pd.DataFrame, self._text),
            }
        key = id(frame)
        self._frames[key] = weakref.ref(frame, lambda _ref: self._frames.pop(key, None))
        return frame

    def uninstall(self) -> None:
        import pandas as pd

        if self._old is None:
            return
        fmts = self._formatters()
        for mime in _MIMES:
            printers = fmts[mime].type_printers
            if getattr(printers.get(pd.DataFrame), "__self__", None) is self:
                if self._old[mime] is None:
                    del printers[pd.DataFrame]
                else:
                    printers[pd.DataFrame] = self._old[mime]
        self._old = None
        self._frames.clear()

    def _formatters(self) -> dict[str, Any]:
        formatter = self._shell.display_formatter
        assert formatter is not None, "an InteractiveShell always has a display formatter"
        return formatter.formatters

    def _ours(self, frame: object) -> bool:
        ref = self._frames.get(id(frame))
        return ref is not None and ref() is frame

    def _html(self, frame: pd.DataFrame) -> str | None:
        if self._ours(frame):
            with frame_options(self._rows()):
                return cast(str, cast(Any, frame)._repr_html_())
        old = (self._old or {}).get("text/html")
        return old(frame) if old else cast(str, cast(Any, frame)._repr_html_())

    def _text(self, frame: pd.DataFrame, p: RepresentationPrinter, cycle: bool) -> None:
        ours, old = self._ours(frame), (self._old or {}).get("text/plain")
        if old and not ours:
            old(frame, p, cycle)
            return
        with frame_options(self._rows()) if ours else nullcontext():
            text = repr(frame)
        with p.group():
            for i, line in enumerate(text.splitlines()):
                if i:
                    p.break_()
                p.text(line)


def _table_html(frame: pd.DataFrame, rows: int, empty: str) -> str:
    if not len(frame):
        return f"<p><i>{html.escape(empty)}</i></p>"
    return frame.to_html(index=False, max_rows=rows, max_cols=30, show_dimensions=len(frame) > rows)


def _table_text(frame: pd.DataFrame, rows: int, empty: str) -> str:
    import pandas as pd

    if not len(frame):
        return f"  {empty}"
    with frame_options(rows), pd.option_context("display.max_colwidth", 80):
        return frame.to_string(index=False, max_rows=rows, show_dimensions=len(frame) > rows)


@dataclass(frozen=True)
class StatusView:
    """``%hdi_status``: the server, what is stored (coverage) and the recent ingests."""

    status: Status
    db_schema: str
    embedded: bool
    rows: int = 20

    @property
    def server(self) -> ServerInfo:
        return self.status.server

    @property
    def coverage(self) -> pd.DataFrame:
        return self.status.coverage

    @property
    def recent(self) -> pd.DataFrame:
        return self.status.recent

    def headline(self) -> tuple[str, str]:
        s = self.status
        where = "embedded" if self.embedded else "configured"
        return (
            f"PostgreSQL {s.server.version} ({s.server.label}, {where}), schema {self.db_schema}",
            f"instruments: {s.instruments}; open quarantine entries: {s.quarantine_open}",
        )

    def timescale(self) -> list[tuple[str, pd.DataFrame]]:
        """(title, frame) of the TimescaleDB sections; none on plain PostgreSQL."""
        info = self.status.server
        if not info.timescaledb:
            return []
        return [
            ("hypertables", info.hypertables),
            ("continuous aggregates", info.aggregates),
            ("policies", info.policies),
        ]

    def __repr__(self) -> str:
        server, counts = self.headline()
        extra = "".join(f"\n\n{title}:\n{_table_text(frame, self.rows, '(none)')}" for title, frame in self.timescale())
        return (
            f"server: {server}\n{counts}\n\ncoverage:\n"
            f"{_table_text(self.coverage, self.rows, '(no data yet: %hdi_ingest ...)')}\n\n"
            f"recent ingests:\n{_table_text(self.recent, self.rows, '(none)')}{extra}"
        )

    def _repr_pretty_(self, p: RepresentationPrinter, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        server, counts = self.headline()
        return (
            f"<div><b>{html.escape(server)}</b><br>{html.escape(counts)}"
            f"<h4>Coverage</h4>{_table_html(self.coverage, self.rows, 'no data yet: %hdi_ingest ...')}"
            f"<h4>Recent ingests</h4>{_table_html(self.recent, self.rows, 'none')}"
            + "".join(
                f"<h4>{html.escape(title.capitalize())}</h4>{_table_html(frame, self.rows, 'none')}"
                for title, frame in self.timescale()
            )
            + "</div>"
        )


@dataclass(frozen=True)
class ConfigView:
    """``%hdi_config``: every setting as (name, value, source), secrets already masked."""

    rows: Sequence[tuple[str, str, str]]

    def __getitem__(self, name: str) -> str:
        for key, value, _ in self.rows:
            if key == name:
                return value
        raise KeyError(name)

    def __repr__(self) -> str:
        return "\n".join(f"{name:<22} {value:<50} {source}" for name, value, source in self.rows)

    def _repr_pretty_(self, p: RepresentationPrinter, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td style='text-align:left'><code>{html.escape(n)}</code></td>"
            f"<td style='text-align:left'>{html.escape(v)}</td><td style='text-align:left'>{html.escape(s)}</td></tr>"
            for n, v, s in self.rows
        )
        head = "<thead><tr><th>setting</th><th>value</th><th>source</th></tr></thead>"
        return f"<table>{head}<tbody>{body}</tbody></table>"
