"""Public names of dbn and the providers: every module declares ``__all__`` listing exactly its public
top-level names, the dbn package's lazy names are the decoder's, and no underscore name crosses modules.

Read from the source (``ast``) like tests/test_layout.py, so nothing heavy is imported."""

from __future__ import annotations

import ast
import importlib

import pytest
from conftest import ROOT

pytestmark = pytest.mark.unit

PARTS = ("dbn", "providers")
MODULES = {
    ".".join(path.relative_to(ROOT).with_suffix("").parts): path
    for part in PARTS
    for path in sorted((ROOT / "hdi_lab" / part).rglob("*.py"))
    if path.name != "__init__.py"  # the package docstrings; dbn's lazy package is checked below
}
#: module-level names that are not API: a module's logger, a type variable
NOT_API = {"log", "T"}


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), str(MODULES[module]))


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(v) for v in value]
    return None


def _public_top_level(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):  # ``a = ...`` and ``a, b = ...``
            for target in node.targets:
                names |= {t.id for t in ast.walk(target) if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")} - NOT_API


def test_the_scan_sees_the_modules() -> None:
    assert {"hdi_lab.dbn.decoder", "hdi_lab.dbn.writer", "hdi_lab.providers.sample",
            "hdi_lab.providers.ib.pacing", "hdi_lab.providers.databento.http"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_declares_all_of_its_public_names(module: str) -> None:
    tree = _tree(module)
    declared = _declared_all(tree)
    assert declared is not None, f"{module} declares no __all__"
    assert len(declared) == len(set(declared)), f"{module}.__all__ repeats a name"
    assert set(declared) == _public_top_level(tree)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_underscore_name_crosses_modules(module: str) -> None:
    """``from hdi_lab.x import _name`` and ``x._name`` on an imported hdi_lab module are both crossings."""
    tree = _tree(module)
    imported: set[str] = set()  # local names bound to hdi_lab modules or their names
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hdi_lab"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{module}:{node.lineno} imports {node.module}.{alias.name}")
                imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("hdi_lab")}
    bad += [f"{module}:{node.lineno} uses {node.value.id}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name) and node.value.id in imported]
    assert not bad


def test_the_dbn_package_offers_the_decoders_names() -> None:
    """hdi_lab.dbn lists the decoder's API by hand (it loads the decoder on first use): the two lists agree."""
    dbn = importlib.import_module("hdi_lab.dbn")
    decoder = _declared_all(_tree("hdi_lab.dbn.decoder"))
    assert decoder is not None
    assert set(dbn.__all__) == {"INT64_MAX", "UINT64_MAX", *decoder}
