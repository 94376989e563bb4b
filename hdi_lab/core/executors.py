"""Where an ingest plan's chunks run: here (``executor="local"``, in order, in this process) or on a Dask
distributed cluster (``executor="dask"``, see :mod:`hdi_lab.core.cluster`).

This module only validates the choice (it imports no Dask), so every front end can offer it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hdi_lab.config import Settings
from hdi_lab.errors import ValidationError

__all__ = ["EXECUTORS", "DaskExecutor", "executor_of"]

#: the choices of ``executor=`` / ``--executor``
EXECUTORS: tuple[str, ...] = ("local", "dask")


@dataclass(frozen=True)
class DaskExecutor:
    """Run chunks on the Dask cluster of ``scheduler``: an address (``tcp://host:8786``; a client is opened
    for the run and closed after it) or the caller's own ``distributed.Client`` (left open)."""

    scheduler: Any  # str | distributed.Client (Dask is imported only when the executor runs)

    def __repr__(self) -> str:
        where = self.scheduler if isinstance(self.scheduler, str) else type(self.scheduler).__name__
        return f"DaskExecutor(scheduler={where!r})"


def executor_of(executor: str | None, scheduler: object, settings: Settings) -> DaskExecutor | None:
    """The executor ``executor`` and ``scheduler`` ask for: None runs locally; ``"dask"`` runs on ``scheduler``
    (an address or a ``distributed.Client``), else on the ``dask_scheduler`` setting (``HDI_DASK_SCHEDULER``).
    A ``scheduler`` given without ``executor`` means ``"dask"``.

    Raises ValidationError for an unknown executor, a scheduler with ``executor="local"``, a scheduler that is
    neither an address nor a client, or ``"dask"`` without any scheduler.
    """
    name = (executor or ("dask" if scheduler is not None else "local")).strip().lower()
    if name not in EXECUTORS:
        raise ValidationError(f"executor={executor!r} is not known: use one of {', '.join(EXECUTORS)}")
    if name == "local":
        if scheduler is not None:
            raise ValidationError(
                "scheduler= is given with executor='local': drop it, or use executor='dask' to run on that cluster"
            )
        return None
    target = scheduler if scheduler is not None else settings.dask_scheduler
    if target is None or (isinstance(target, str) and not target.strip()):
        raise ValidationError(
            "executor='dask' needs a scheduler: pass scheduler='tcp://host:8786' (or a distributed.Client), "
            "--scheduler, or set HDI_DASK_SCHEDULER"
        )
    if isinstance(target, str):
        address = target.strip()
        if "://" not in address and ":" not in address:
            raise ValidationError(
                f"scheduler={target!r} is not a Dask scheduler address: write it like tcp://host:8786"
            )
        return DaskExecutor(address)
    if not hasattr(target, "submit") or not hasattr(target, "register_plugin"):
        raise ValidationError(
            f"scheduler={type(target).__name__} is neither an address nor a distributed.Client: pass "
            "'tcp://host:8786' or a Client"
        )
    return DaskExecutor(target)
