"""Feature sets: versioned sets of indicator columns, computed per instrument over stored bars and stored.

>>> from hdi_lab import features
>>> features.compute("momentum_v1", symbols=["AAPL"], interval="1d", start="2024-01-01", end="2024-07-01")
>>> features.read("momentum_v1", symbols=["AAPL"], start="2024-01-01", end="2024-07-01")

**Storage.** One wide table per (set, interval) in the hdi_lab schema, :func:`table_name`
(``features_momentum_v1_1d``): ``instrument_id bigint, event_timestamp timestamptz, created
timestamptz, symbol text`` and one ``double precision`` column per feature, primary key
``(instrument_id, event_timestamp)`` and an index ``(instrument_id, event_timestamp DESC, created
DESC)`` for as-of joins (Feast). The registry table ``feature_sets`` records each set and interval
computed (columns, JSON definition, table, created/updated). Warm-up values are NULL (NaN in
frames).

**Point in time.** A feature's ``event_timestamp`` is the *close* of its bar (``ts_event`` of the
bar, its open, plus the interval): the moment its value became knowable. A daily bar of
2024-01-02 gives features stamped 2024-01-03 00:00 UTC. Values use that bar and earlier ones only.

**Ranges.** :func:`compute` writes the features of the bars whose ``ts_event`` (open) lies in
``[start, end)`` -- the same bars ``hdi_lab.query`` returns for that range; :func:`read` selects
on ``event_timestamp`` in ``[start, end)`` (what was knowable in that window).

**Incremental and exact.** Every value is the one a computation from the instrument's *first
stored bar* gives, bit for bit, however the range is split: computing day by day stores exactly
what one full computation stores (tested). Two ways get there (all instruments at once,
:mod:`hdi_lab.indicators`):

* *resumed* -- after each computation the state of every instrument after its last computed bar
  is saved, in the same transaction as the rows, in :func:`state_table_name`
  (``features_state_momentum_v1_1d``: ``instrument_id`` key, ``ts_event`` the open of that bar,
  ``bars`` its bars up to it, ``symbol``, ``layout``, ``state float8[]``: the recursive averages,
  see :func:`hdi_lab.indicators.compute_resumable`). When ``start`` follows that bar (no stored
  bar between them) and the instrument still has ``bars`` stored bars up to it, only its last
  :func:`hdi_lab.indicators.history` bars (34 for momentum_v1, for the windows) and the new ones
  are read -- one query for all instruments -- and the recursive indicators continue from the
  state. ``bench/bench_features.py`` measures it (one new day for 500 instruments).
* *from the first bar* -- everything else: no state yet (first computation, new instrument), a
  range that does not follow the saved bar (a re-run of the past), a backfill of bars older
  than the saved one (the count differs: the state is not used), more than one stored row per
  bar (several publishers: the count never matches), ``max_gap`` given (it checks the whole
  history), rolled-up intervals (5m, 15m) and sets with indicators that cannot resume
  (``trend_v1``: ADX, stochastic, OBV, VWAP, z-score). An instrument whose history still fits in
  the window is simply computed from its first bar out of the window read.

Bars added or corrected in the past change later features: re-run over the affected range
(``start`` at or before the first changed bar: that run recomputes from the first bar and saves
new states). A correction *in place* of a bar before the saved one is not detected by the count:
re-run from it before computing newer bars. States belong to the stored rows: without the feature
table they are not used, and the computation that creates it starts a new state table.

**Idempotent.** Rows are upserted: ``created`` is the time of the computation that last changed a
row; a re-run that yields the same values updates nothing (``IS DISTINCT FROM``), so ``created``
only moves when a value changed.

**Gaps.** Windows count bars, not time (see :mod:`hdi_lab.indicators`): a gap in the bars is
not filled. The report gives the largest gap between consecutive bars read; ``max_gap="3D"``
refuses instruments with a longer gap (ValidationError naming the instrument and the gap).

**Intervals.** ``1s``, ``5s`` (IB's 5-second bars), ``1m``, ``1h`` and ``1d`` read the stored bar tables
(``ohlcv_1d``...);
``5m`` and ``15m`` read bars rolled up from ``ohlcv-1m`` (``hdi_lab.query(..., interval=...)``,
buckets aligned on midnight UTC). A rolled-up bucket is only final once all its minutes are
stored: compute up to an ``end`` on a bucket boundary that has been ingested.

**Modules.** :mod:`~hdi_lab.features.sets` (the catalogue, table names),
:mod:`~hdi_lab.features.compute` (reading, sorting and computing the instruments),
:mod:`~hdi_lab.features.resume` (the resume decision, pure), :mod:`~hdi_lab.features.bars` (the bars
read) and :mod:`~hdi_lab.features.read` (stored features, overlays); the SQL is in
:mod:`hdi_lab.storage.features`.

**Symbols.** Features belong to instruments. Compute with raw or parent symbols: a continuous
symbol (``ES.c.0``) only reads the days it maps to each contract, which is a shorter history than
the contract's own.

**Continuous series.** ``adjust="ratio"`` (``difference``, ``none``) computes over the back-adjusted
continuous series of continuous symbols instead, in the ``view`` ``research`` (one adjustment from the
latest roll: rewritten when a new roll comes) or ``as_of`` (point in time), each in a table of its own
(``features_momentum_v1_1d_ratio_as_of``): see :mod:`hdi_lab.features.continuous`.
"""

from hdi_lab.features.compute import FeatureReport, compute
from hdi_lab.features.read import list_sets, overlay, read
from hdi_lab.features.sets import FEATURE_SETS, FeatureSet, feature_set, state_table_name, table_name
from hdi_lab.schemas import INTERVALS

__all__ = [
    "FEATURE_SETS",
    "INTERVALS",
    "FeatureReport",
    "FeatureSet",
    "compute",
    "feature_set",
    "list_sets",
    "overlay",
    "read",
    "state_table_name",
    "table_name",
]
