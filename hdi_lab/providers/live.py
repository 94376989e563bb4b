"""What every live feed shares: the bounded buffer between a client's callback and the writer, and the items
passed through it.

A feed's callback runs on the client's network thread and :meth:`LiveBuffer.put` s each item; when the buffer
holds ``capacity`` items the callback waits, so the client stops reading its socket and TCP pushes back on the
gateway: a slow writer never makes a record be dropped, and memory stays bounded by the buffer (plus the
socket buffers). The writer takes whatever has arrived with :meth:`LiveBuffer.take`.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import TypeAlias

from hdi_lab.dbn import Mapping
from hdi_lab.schemas import Schema

__all__ = ["Item", "LiveBuffer", "Note"]


@dataclass(frozen=True)
class Note:
    """A message of the gateway for the session's log (an error or system message), not data."""

    text: str
    error: bool = False


#: one record's bytes with its schema, or (None, a symbology interval or a note)
Item: TypeAlias = tuple[Schema, bytes] | tuple[None, Mapping | Note]


class LiveBuffer:
    """A bounded FIFO of :data:`Item` s: one producer (the client's callback), one consumer (the writer)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self.capacity = capacity
        self._items: collections.deque[Item] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._waiting = False  # the consumer waits for items
        self.waits = 0  # times the producer waited for room (backpressure applied)
        self.high_water = 0  # most items held at once

    def put(self, item: Item) -> bool:
        """Append ``item``, waiting while the buffer is full; returns False (item not taken) once closed."""
        with self._cond:
            if len(self._items) >= self.capacity:
                self.waits += 1
                while len(self._items) >= self.capacity and not self._closed:
                    self._cond.wait(0.5)
            if self._closed:
                return False
            self._items.append(item)
            n = len(self._items)
            self.high_water = max(self.high_water, n)
            if self._waiting:
                self._cond.notify_all()
        return True

    def take(self, limit: int, timeout: float) -> list[Item]:
        """Up to ``limit`` items, waiting up to ``timeout`` seconds for the first (none: an empty list)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._waiting = True
                self._cond.wait(left)
                self._waiting = False
            n = min(limit, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            if n:
                self._cond.notify_all()  # room for a waiting producer
        return out

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Refuse further items and wake everyone; items already held can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
