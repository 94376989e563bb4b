"""The indicator catalogue's entries: each one complete (pandas-ta call, panel kernel, state slots
consistent with its outputs and warm-ups), the tables derived from the entries, and the package's
arrows (nothing of hdi_lab but errors and extras; importing it loads no pandas-ta).

The values themselves (textbook references, panel == one by one, resumed == full, bit for bit) are
checked in tests/test_indicators.py.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from hdi_lab import indicators
from hdi_lab.indicators import catalogue
from hdi_lab.indicators.entry import Indicator

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "hdi_lab" / "indicators"
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
#: the modules of the package that are no indicator: the machinery every entry goes through
MACHINERY = ("__init__", "catalogue", "entry", "frame", "kernels", "naming", "panel")


def _bars(n: int = 120, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    spread = np.abs(rng.normal(0, 0.004, n)) * close
    index = pd.date_range("2024-01-02 14:30", periods=n, freq="2h", tz="UTC")
    return pd.DataFrame(
        {
            "open": close,
            "high": close + spread,
            "low": close - spread,
            "close": close,
            "volume": rng.integers(1, 1000, n).astype(np.float64),
        },
        index=index,
    )


def _defaults(entry: Indicator) -> dict[str, object]:
    return {p.name: p.default for p in entry.params}


@pytest.mark.parametrize("entry", catalogue.ENTRIES, ids=lambda e: e.name)
def test_every_entry_is_complete(entry: Indicator) -> None:
    """Parameters, outputs, inputs and warm-ups agree; the pandas-ta call yields exactly the outputs; the
    panel kernel, when there is one, yields exactly the outputs and carries exactly its state slots, whose
    last values are the ones its resumed run starts from."""
    params = _defaults(entry)
    assert entry.outputs and len(set(entry.outputs)) == len(entry.outputs)
    assert len({p.name for p in entry.params}) == len(entry.params)
    assert entry.inputs and set(entry.inputs) <= set(BAR_COLUMNS)
    warmups = entry.warmup(params)
    assert set(warmups) == set(entry.outputs) and all(isinstance(w, int) and w >= 0 for w in warmups.values())
    if entry.check is not None:
        entry.check(params)  # the defaults pass their own check

    bars = _bars()
    outputs = entry.run(bars[list(entry.inputs)], params)
    assert set(outputs) == set(entry.outputs)
    for name, series in outputs.items():
        assert len(series) == len(bars) and series.index.equals(bars.index), name

    if entry.panel is None:
        assert not entry.on_panel(params) and entry.state_slots(params) == ()
        assert entry.name not in indicators.PANEL and entry.name not in indicators.STATE_SLOTS
        return
    assert len(set(entry.panel.state)) == len(entry.panel.state)
    assert entry.on_panel(params), "the default parameters run on the panel"
    assert entry.state_slots(params) == entry.panel.state
    panel = {
        name: np.asfortranarray(np.stack([bars[name].to_numpy(), bars[name].to_numpy()[::-1]], axis=1))
        for name in entry.inputs
    }
    values, carried = entry.panel.kernel(params, panel, None)
    assert set(values) == set(entry.outputs)
    assert set(carried) == set(entry.panel.state)
    for array in (*values.values(), *carried.values()):
        assert array.shape == (len(bars), 2) and array.dtype == np.float64
    at = len(bars) // 2
    again, carried_again = entry.panel.kernel(params, panel, (at, {s: v[at] for s, v in carried.items()}))
    for name in entry.outputs:  # resumed from its own state: the same run from the next row on
        np.testing.assert_array_equal(again[name][at + 1 :], values[name][at + 1 :], err_msg=name)
    for slot in entry.panel.state:
        np.testing.assert_array_equal(carried_again[slot][at + 1 :], carried[slot][at + 1 :], err_msg=slot)


def test_every_indicator_module_is_listed_and_named_for_its_entry() -> None:
    """Each module of the package but the machinery holds one entry named like it, and the catalogue
    lists them all (a module left out would silently not exist)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - set(MACHINERY)
    assert {m.__name__.rsplit(".", 1)[1] for m in catalogue.MODULES} == modules
    for module in catalogue.MODULES:
        assert module.ENTRY.name == module.__name__.rsplit(".", 1)[1]
        assert module.__all__ == ["ENTRY"] and module.__doc__


def test_the_tables_are_derived_from_the_entries() -> None:
    entries = tuple(m.ENTRY for m in catalogue.MODULES)
    assert entries == catalogue.ENTRIES
    assert {e.name: e for e in entries} == indicators.CATALOGUE
    assert list(indicators.CATALOGUE) == [e.name for e in entries]
    assert {o: e.name for e in entries for o in e.outputs} == indicators.OUTPUTS
    assert len(indicators.OUTPUTS) == sum(len(e.outputs) for e in entries), "an output name is taken twice"
    assert tuple(e.name for e in entries if e.panel is not None) == indicators.PANEL
    assert {e.name: e.panel.state for e in entries if e.panel is not None and e.panel.state} == indicators.STATE_SLOTS
    # and written by no hand: catalogue.py assigns them from ENTRIES, not as literals
    tree = ast.parse((PACKAGE / "catalogue.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id != "MODULES":
            assert node.value is not None
            names = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            assert not isinstance(node.value, (ast.Dict, ast.Tuple, ast.List, ast.Set)), node.target.id
            assert names & {"ENTRIES", "MODULES"}, node.target.id


def test_indicator_knowledge_stays_in_its_module() -> None:
    """No module of the machinery names an indicator or an output (``if indicator == "macd"``): what is
    particular to an indicator lives in its entry."""
    names = set(indicators.CATALOGUE) | set(indicators.OUTPUTS)
    bad = []
    for stem in MACHINERY:
        tree = ast.parse((PACKAGE / f"{stem}.py").read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        bad += [
            f"{stem}.py:{n.lineno} {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in names and id(n) not in docstrings
        ]
    assert not bad


def test_resumable_means_on_the_panel() -> None:
    assert indicators.state_layout("logret_1") == () and indicators.state_layout("logret_2") is None
    assert indicators.state_layout("macd_12_26_9,ema_5") == (
        "macd_12_26_9.fast",
        "macd_12_26_9.slow",
        "macd_12_26_9.signal",
        "ema_5.ema",
    )


def test_indicators_import_only_errors_and_extras_of_hdi_lab() -> None:
    """The arrow of issue 14: indicators -> nothing of hdi_lab but errors and extras (function-local
    and typing-only imports included)."""
    allowed = ("hdi_lab.errors", "hdi_lab.extras", "hdi_lab.indicators")
    bad = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad += [
                f"{path.name}:{node.lineno} imports {t}"
                for t in targets
                if t.split(".")[0] == "hdi_lab" and not any(t == a or t.startswith(a + ".") for a in allowed)
            ]
    assert not bad


def test_importing_the_indicators_loads_no_pandas_ta() -> None:
    code = "import json, sys\nimport hdi_lab.indicators\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m.split(".")[0] in ("pandas_ta", "numba") or m.startswith("numpy.typing")]
    assert not [
        m
        for m in loaded
        if m.startswith("hdi_lab.") and not m.startswith(("hdi_lab.indicators", "hdi_lab.errors", "hdi_lab.extras"))
    ]
