"""The package's import arrows: dbn reads and writes DBN and imports no other part, providers import
dbn (never storage), storage imports dbn (never the reverse), no import cycles, and SQL runs in storage only.

Imports are read from the source (``ast``), not executed, so an arrow hidden in a function body (the
lazy-loading pattern used here) or under ``if TYPE_CHECKING:`` counts as well; a fresh interpreter
then checks what importing a part actually loads.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "hdi_lab"

#: Modules every part may import: they import nothing of hdi_lab but each other.
LEAVES = (
    "hdi_lab.errors",
    "hdi_lab.schemas",
    "hdi_lab.extras",
    "hdi_lab.config",
    "hdi_lab.calendars",
    "hdi_lab.dsn",
    "hdi_lab.dbn.vendor_warnings",
)

#: The parts under test and what each may reach (transitively): itself, what is listed, the leaves.
MAY_REACH = {
    "hdi_lab.dbn": (),
    "hdi_lab.providers": ("hdi_lab.dbn",),
    "hdi_lab.storage": ("hdi_lab.dbn",),
}

#: Known function-local imports left out of the module cycle check, each with its reason (none left:
#: storage.db <-> storage.timescale, the hidden cycle issue #14 named, went with storage.cursor).
EXEMPT: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (``from m import name`` counts as m.name when that is a module)
    local: bool  # inside a function body: runs on first use
    typing_only: bool  # under ``if TYPE_CHECKING:``: never runs
    line: int


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports() -> list[Import]:
    found: list[Import] = []

    def visit(module: str, node: ast.AST, local: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            in_local = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            in_typing = typing_only or (isinstance(child, ast.If) and _is_type_checking(child))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{module}:{child.lineno}: relative import"
                base = child.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            found.extend(
                Import(module, t, local, typing_only, child.lineno)
                for t in targets
                if t == "hdi_lab" or t.startswith("hdi_lab.")
            )
            visit(module, child, in_local, in_typing)

    for module, path in MODULES.items():
        visit(module, ast.parse(path.read_text(), str(path)), False, False)
    return found


IMPORTS = _imports()


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_import_scan_sees_the_package() -> None:
    assert {
        "hdi_lab.dbn",
        "hdi_lab.dbn.decoder",
        "hdi_lab.dbn.writer",
        "hdi_lab.storage.normalise",
        "hdi_lab.providers.file",
    } <= set(MODULES)
    arrows = {(i.source, i.target) for i in IMPORTS}
    assert ("hdi_lab.storage.load", "hdi_lab.dbn") in arrows  # a module-level import
    assert ("hdi_lab.core.session", "hdi_lab.providers.file") in arrows  # a function-local one
    assert ("hdi_lab", "hdi_lab.api") in arrows  # one under TYPE_CHECKING


@pytest.mark.parametrize("part", sorted(MAY_REACH))
def test_a_part_reaches_only_what_its_arrows_allow(part: str) -> None:
    """Everything a part imports, directly or through what it imports, function-local and typing-only
    imports included: dbn reaches only leaves, providers only dbn, storage only dbn."""
    allowed = (part, *MAY_REACH[part], *LEAVES)
    arrows: dict[str, list[Import]] = {}
    for imp in IMPORTS:
        arrows.setdefault(imp.source, []).append(imp)
    seen: set[str] = set()
    todo = [m for m in MODULES if _within(m, (part,))]
    bad = []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for imp in arrows.get(module, []):
            if not _within(imp.target, allowed):
                bad.append(f"{imp.source}:{imp.line} imports {imp.target}")
            todo.append(imp.target)
    assert not bad, f"{part} may import only {allowed}:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules() -> None:
    """Imports that run (module level and function-local) form no cycle; typing-only ones never run."""
    edges = {(i.source, i.target) for i in IMPORTS if not i.typing_only}
    assert _cycles(edges - EXEMPT) == []
    assert edges >= EXEMPT, "an exempt import is gone: drop it from EXEMPT"


def test_storage_modules_import_each_other_at_module_level() -> None:
    """A function-local import inside storage hid the storage.db <-> storage.timescale cycle: storage
    modules import hdi_lab at module level only, so the cycle check sees every arrow as it runs."""
    local = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in IMPORTS
        if _within(i.source, ("hdi_lab.storage",)) and i.local and not i.typing_only
    ]
    assert not local
    assert ("hdi_lab.storage.timescale", "hdi_lab.storage.db") not in {(i.source, i.target) for i in IMPORTS}


def test_no_import_cycle_between_parts() -> None:
    """Between parts (``hdi_lab.dbn``, ``hdi_lab.storage``, a top-level module, ...), counting
    function-local imports too: storage -> dbn -> storage was such a cycle."""

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = {(part(i.source), part(i.target)) for i in IMPORTS if not i.typing_only}
    assert _cycles(edges) == []


#: Cursor methods that run SQL (and ``psycopg2.extras.execute_values``).
SQL_CALLS = ("execute", "executemany", "copy_expert", "copy_from", "copy_to", "mogrify", "execute_values")


def _sql_calls() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                out.setdefault(module, []).append(f"{module}:{node.lineno} {node.func.attr}()")
    return out


def test_all_sql_runs_in_storage() -> None:
    """Storage is the only part that runs SQL: nothing outside ``hdi_lab.storage`` calls ``execute``,
    ``copy_expert``, ``mogrify``, ``execute_values`` ... (the Feast glue runs its SQL through storage.feast)."""
    calls = _sql_calls()
    assert any(_within(m, ("hdi_lab.storage",)) for m in calls)  # the scan sees SQL where it is
    bad = [c for m, cs in calls.items() if not _within(m, ("hdi_lab.storage",)) for c in cs]
    assert not bad, "SQL outside hdi_lab.storage (move it to a storage module):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "module",
    [
        "hdi_lab.dbn",
        "hdi_lab.dbn.decoder",
        "hdi_lab.dbn.writer",
        *sorted(m for m in MODULES if m.startswith("hdi_lab.providers")),
    ],
)
def test_importing_dbn_or_a_provider_loads_no_storage(module: str) -> None:
    code = f"import json, sys, {module}\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if _within(m, ("hdi_lab.storage", "hdi_lab.core.ingestion", "hdi_lab.core.session"))]
    if module.startswith("hdi_lab.dbn"):
        assert not [m for m in loaded if _within(m, ("hdi_lab.providers",))]


def test_dbn_constants_do_not_load_the_decoder() -> None:
    """storage.tables (and with it %hdi_status) takes DBN's sentinels from the package without
    importing the decoder (databento, pandas)."""
    code = (
        "import json, sys\nfrom hdi_lab.dbn import INT64_MAX\nimport hdi_lab.storage.tables\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & {"hdi_lab.dbn.decoder", "databento", "pandas"}


def test_moved_names_keep_their_old_paths() -> None:
    from hdi_lab import dbn, dbn_writer
    from hdi_lab.dbn import decoder, writer

    for name in dbn.__all__:
        assert getattr(dbn, name) is getattr(decoder, name, getattr(dbn, name)), name
    assert callable(dbn.decode) and dbn.decode is decoder.decode  # the function, not a submodule
    tree = ast.parse(MODULES["hdi_lab.dbn.writer"].read_text())
    defined = {
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    defined |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert set(dbn_writer.__all__) == {n for n in defined if not n.startswith("_")}
    for name in dbn_writer.__all__:
        assert getattr(dbn_writer, name) is getattr(writer, name), name


# -- public names: every module says what it exports, no module reaches for another's private names ----------


def _trees() -> dict[str, ast.Module]:
    return {module: ast.parse(path.read_text(), str(path)) for module, path in MODULES.items()}


TREES = _trees()


def _declares_all(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "__all__":
            return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == "__all__" for a in node.names):
            return True  # a re-export shim takes the list of the module it re-exports
    return False


def _only_documents(tree: ast.Module) -> bool:
    """A package ``__init__`` that holds its docstring (and ``from __future__``) only."""
    return all(
        (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        or (isinstance(n, ast.ImportFrom) and n.module == "__future__")
        for n in tree.body
    )


def _private(name: str) -> bool:
    """An underscore name that is not a dunder (``__all__``) or an IPython display hook (``_repr_html_``)."""
    return name.startswith("_") and not name.endswith("_")


def _private_uses(module: str, tree: ast.Module) -> list[str]:
    """Where ``module`` imports an underscore name of an hdi_lab module or reads one as an attribute of an
    hdi_lab module it imported (``from hdi_lab.x import _y``, ``x._y``, ``hdi_lab.x._y``)."""
    bound: dict[str, str] = {}  # local name -> the hdi_lab module it names
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "hdi_lab" or a.name.startswith("hdi_lab."):
                    bound[a.asname or "hdi_lab"] = a.name if a.asname else "hdi_lab"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hdi_lab"):
            for a in node.names:
                if _private(a.name):
                    found.append(f"{module}:{node.lineno} imports {node.module}.{a.name}")
                elif f"{node.module}.{a.name}" in MODULES:
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        path, base = [], node.value
        while isinstance(base, ast.Attribute):
            path.insert(0, base.attr)
            base = base.value
        if not (isinstance(base, ast.Name) and base.id in bound):
            continue
        owner = ".".join([bound[base.id], *path])
        if owner in MODULES and owner != module:
            found.append(f"{module}:{node.lineno} reads {owner}.{node.attr}")
    return found


def _all_of(tree: ast.Module) -> list[str] | None:
    """The names ``__all__`` lists, when the module writes the list itself."""
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and getattr(node, "value", None):
            return [str(n) for n in ast.literal_eval(node.value)]
    return None


#: module-level values that are not API: a logger, a type variable, an optional package bound by extras.require
_NOT_API_CALLS = ("getLogger", "TypeVar", "require")


def _defined_public(tree: ast.Module) -> set[str]:
    """The public names a module defines itself (def, class, assignment), not what it imports."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            call = node.value.func if isinstance(node.value, ast.Call) else None
            if call is not None and (getattr(call, "attr", None) or getattr(call, "id", None)) in _NOT_API_CALLS:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def test_every_module_declares_all() -> None:
    """Every module says what it exports (``__all__``), but package ``__init__`` files that only document and
    ``from x import *`` re-exports: ``__all__`` lists every public name the module defines (it may add names it
    re-exports), once, and no underscore name."""
    missing = {
        m
        for m, tree in TREES.items()
        if not _declares_all(tree) and not _only_documents(tree) and not m.endswith(".__main__")
    }
    assert not missing, f"declare __all__ in {sorted(missing)}"
    for module, tree in TREES.items():
        declared = _all_of(tree)
        if declared is None:
            continue
        assert len(declared) == len(set(declared)), f"{module}.__all__ repeats a name"
        assert not [n for n in declared if n.startswith("_") and n != "__version__"], (
            f"{module}: __all__ lists an underscore name"
        )
        star = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body)
        if not star:
            assert not _defined_public(tree) - set(declared), (
                f"{module}: public but not in __all__ (add it, or make it private): "
                f"{sorted(_defined_public(tree) - set(declared))}"
            )


def test_the_dbn_package_offers_the_decoders_names() -> None:
    """hdi_lab.dbn lists the decoder's API by hand (it loads the decoder on first use): the two lists agree."""
    from hdi_lab import dbn

    decoder = _all_of(TREES["hdi_lab.dbn.decoder"])
    assert decoder is not None
    assert set(dbn.__all__) == {"INT64_MAX", "UINT64_MAX", *decoder}


def test_no_module_uses_another_modules_underscore_names() -> None:
    """An underscore name is its module's own: one another module needs is made public instead."""
    found = {m: uses for m, tree in TREES.items() if (uses := _private_uses(m, tree))}
    bad = [u for uses in found.values() for u in uses]
    assert not bad, "private names crossing modules (make them public):\n" + "\n".join(bad)


def test_the_private_name_scan_sees_each_form() -> None:
    code = (
        "import hdi_lab.storage.db\nfrom hdi_lab.storage import load as ld\nfrom hdi_lab.core.plan import _x\n"
        "def f():\n    return ld._q, hdi_lab.storage.db._MIGRATION, ld.Cursor, x._repr_html_()\n"
    )
    uses = _private_uses("hdi_lab.somewhere", ast.parse(code))
    assert uses == [
        "hdi_lab.somewhere:3 imports hdi_lab.core.plan._x",
        "hdi_lab.somewhere:5 reads hdi_lab.storage.load._q",
        "hdi_lab.somewhere:5 reads hdi_lab.storage.db._MIGRATION",
    ]


# -- docstrings: a public function that raises says so ------------------------------------------------------


def _silent_raisers(tree: ast.Module) -> list[str]:
    """Public functions and methods (module or public class level) whose body raises an exception it builds
    (``raise X(...)``) but whose docstring never says "raise"."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                raises = any(isinstance(r, ast.Raise) and isinstance(r.exc, ast.Call) for r in ast.walk(node))
                if raises and "raise" not in (ast.get_docstring(node) or "").lower():
                    found.append(f"{prefix}{node.name}:{node.lineno}")

    visit(tree.body, "")
    return found


def test_public_functions_that_raise_say_so() -> None:
    """A public function or method that raises names what it raises, and when, in its docstring."""
    bad = [f"{m}.{f}" for m, tree in TREES.items() for f in _silent_raisers(tree)]
    assert not bad, "say what these raise (and when) in their docstrings:\n" + "\n".join(bad)


def test_the_raise_scan_sees_each_form() -> None:
    code = (
        "def quiet():\n    raise ValueError('x')\n"
        "def told():\n    '''Raises ValueError always.'''\n    raise ValueError('x')\n"
        "def _own():\n    raise ValueError('x')\n"
        "def reraises():\n    try:\n        pass\n    except ValueError:\n        raise\n"
        "class Public:\n    def method(self):\n        raise ValueError('x')\n"
        "    @staticmethod\n    def told():\n        '''It raises.'''\n        raise ValueError('x')\n"
        "class _Hidden:\n    def method(self):\n        raise ValueError('x')\n"
    )
    assert _silent_raisers(ast.parse(code)) == ["quiet:1", "Public.method:14"]


@pytest.mark.unit
def test_every_extra_the_code_names_is_declared_and_installed_by_dev() -> None:
    """extras.EXTRAS (what a MissingDependency tells a user to install) names extras pyproject declares, each
    holding the module's distribution, and the dev extra (what CI installs) includes each of them."""
    import importlib.metadata
    import re
    import tomllib

    from hdi_lab.extras import EXTRAS

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = next(d for d in declared["dev"] if d.startswith("hdi_lab["))
    in_dev = set(dev[len("hdi_lab[") : -1].split(","))
    dists = importlib.metadata.packages_distributions()
    for module, extra in EXTRAS.items():
        assert extra in declared and extra in in_dev, (module, extra)
        # each requirement's name and the extras it asks for ("dask[distributed]": dask and distributed)
        wanted = {
            w.lower().replace("_", "-")
            for d in declared[extra]
            for w in re.findall(r"[\w.-]+", re.split("[<>=~!]", d)[0])
        }
        names = {n.lower().replace("_", "-") for n in dists.get(module, [])}
        assert names & wanted, (module, names, wanted)
