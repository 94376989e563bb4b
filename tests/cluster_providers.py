"""Test-only providers and probes for the Dask executor tests (tests/test_cluster.py). A module of its own: the Dask
worker processes unpickle these by reference, so they must be importable there (spawned workers get the test
process's sys.path)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hdi_lab.errors import ProviderError
from hdi_lab.providers.base import Fetch
from hdi_lab.providers.sample import SampleProvider
from hdi_lab.schemas import Chunk


class StallingSampleProvider(SampleProvider):
    """The sample provider, but the chunk starting on ``stall_day`` stalls after its records were yielded (so they
    are loaded, uncommitted, in the chunk's transaction): the first time only, it writes its process id to
    ``marker`` and sleeps ``seconds``. The test kills that process meanwhile; the retried chunk does not stall."""

    def __init__(self, stall_day: str, marker: Path, seconds: float = 120.0) -> None:
        super().__init__()
        self.stall_day, self.marker, self.seconds = stall_day, marker, seconds

    def fetch(self, chunk: Chunk) -> Fetch:
        yield from super().fetch(chunk)
        if f"{chunk.start.date()}" == self.stall_day and not self.marker.exists():
            tmp = self.marker.with_suffix(".tmp")
            tmp.write_text(str(os.getpid()))
            tmp.rename(self.marker)  # the pid appears whole
            time.sleep(self.seconds)


class FailingSampleProvider(SampleProvider):
    """The sample provider, but fetching the chunk starting on ``fail_day`` fails as a vendor would."""

    def __init__(self, fail_day: str) -> None:
        super().__init__()
        self.fail_day = fail_day

    def fetch(self, chunk: Chunk) -> Fetch:
        if f"{chunk.start.date()}" == self.fail_day:
            raise ProviderError(f"the test vendor refuses {chunk.describe()}", provider="sample", status=503)
        yield from super().fetch(chunk)


def executing(dask_worker: Any) -> list[str]:
    """The keys of the tasks a worker is running now (``client.run(executing)``: Dask passes the worker)."""
    return [str(ts.key) for ts in dask_worker.state.executing]
