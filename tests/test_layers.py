"""The package's import layers: no module imports from a higher layer, no import cycles.

The layer order is read from the numbered list of the ``## Layers`` section of
``docs/architecture.md`` (one owner: the document the reader sees). Every ``import`` and
``from ... import`` of every module under ``faket_dask/`` is checked, wherever it stands
(module level, inside functions, under ``if TYPE_CHECKING``), relative or absolute.

A module's layer is its top-level name below ``faket_dask``: ``faket_dask.kernels.nst.vgg`` is
``kernels``, ``faket_dask.store.layout`` is ``store``. The facade ``faket_dask/__init__.py`` is
exempt as an importer and forbidden as a target (it imports everything, so importing it from
inside the package is a cycle waiting to happen).
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "faket_dask"
PACKAGE_DIR = REPO / PACKAGE
ARCHITECTURE = REPO / "docs" / "architecture.md"


# -- the layer list ----------------------------------------------------------------------------
def read_layers(text: str) -> dict[str, int]:
    """``{top-level name: layer number}`` from the numbered list of the ``## Layers`` section.

    An item is ``N. `name`, `name` — why``: the back-quoted names before the dash are the
    layer's members (continuation lines of an item are ignored).
    """
    m = re.search(r"^## Layers[^\n]*\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    if m is None:
        raise AssertionError(f"{ARCHITECTURE}: no '## Layers' section")
    layers: dict[str, int] = {}
    for line in m.group(1).splitlines():
        item = re.match(r"^(\d+)\.\s+(.*)$", line)
        if not item:
            continue
        head = re.split(r"\s+[—–-]\s+", item.group(2), maxsplit=1)[0]
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", head):
            if name in layers:
                raise AssertionError(f"{ARCHITECTURE}: {name!r} is listed in two layers")
            layers[name] = int(item.group(1))
    if not layers:
        raise AssertionError(f"{ARCHITECTURE}: the '## Layers' section has no numbered list")
    return layers


# -- the modules and their imports --------------------------------------------------------------
def module_name(path: Path) -> str:
    """``faket_dask/kernels/nst/vgg.py`` -> ``faket_dask.kernels.nst.vgg`` (packages: their name)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(importer: str, is_package: bool, level: int, target: str | None) -> str:
    """Absolute dotted name of a (possibly relative) import target."""
    if level == 0:
        return target or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]                       # a module's own package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(imported faket_dask module, line)`` for every import statement of a module.

    ``from PKG import x`` targets ``PKG.x`` when that is a module of the package (a submodule
    imported by name), else ``PKG`` (a name defined in ``PKG``).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield _known(alias.name, modules), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            if base != PACKAGE and not base.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in modules else _known(base, modules)), node.lineno


def _known(dotted: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``dotted`` that is a module (``import a.b.c`` binds ``a.b.c``)."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or dotted


def layer_key(module: str) -> str | None:
    """The top-level name deciding a module's layer; None for the facade itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


# -- the checks -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layers() -> dict[str, int]:
    return read_layers(ARCHITECTURE.read_text())


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    modules = all_modules()
    return {m: list(imports_of(m, p, modules)) for m, p in modules.items()}


def test_layer_list_is_read(layers):
    """The section parses: distinct names, numbers from 1 without gaps, in order."""
    numbers = sorted(set(layers.values()))
    assert numbers == list(range(1, len(numbers) + 1))
    assert layers["errors"] < layers["kernels"] < layers["store"] < layers["stages"] < layers["cli"]


def test_every_module_has_a_layer(layers, graph):
    missing = sorted({layer_key(m) for m in graph if layer_key(m) and layer_key(m) not in layers})
    assert not missing, (f"modules without a layer (add them to '## Layers' in {ARCHITECTURE.name}): "
                         f"{', '.join(missing)}")


def upward_imports(graph: dict[str, list[tuple[str, int]]], layers: dict[str, int]) -> list[str]:
    """One message per import of a higher layer or of the facade (the facade itself imports freely)."""
    bad = []
    for importer, targets in sorted(graph.items()):
        src = layer_key(importer)
        if src is None or src not in layers:          # the facade; unlisted: the test above
            continue
        for target, line in targets:
            dst = layer_key(target)
            where = f"{importer} (line {line})"
            if dst is None:
                bad.append(f"{where} imports the facade {PACKAGE}; import from the owning module")
            elif dst in layers and layers[dst] > layers[src]:
                bad.append(f"{where} imports {target}: layer {layers[dst]} ({dst}) is above "
                           f"layer {layers[src]} ({src})")
    return bad


def test_no_upward_imports(layers, graph):
    bad = upward_imports(graph, layers)
    assert not bad, "upward imports:\n  " + "\n  ".join(bad)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of a directed graph (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))
    return out


def test_no_import_cycles(graph):
    edges = {m: {t for t, _ in targets if t in graph and t != m} for m, targets in graph.items()}
    cycles = [c for c in strongly_connected(edges) if len(c) > 1]
    msgs = []
    for comp in cycles:
        members = set(comp)
        links = sorted(f"{a} -> {b}" for a in comp for b in edges[a] if b in members)
        msgs.append(", ".join(comp) + "\n    " + "\n    ".join(links))
    assert not cycles, "import cycles:\n  " + "\n  ".join(msgs)


def test_checker_sees_relative_absolute_and_function_level_imports(tmp_path):
    """The walker itself: every import form resolves to the right module."""
    src = (
        "from .. import store\n"
        "from ..kernels import specimen as K\n"
        "import faket_dask.errors\n"
        "def f():\n"
        "    from faket_dask.cli import main\n"
        "    from . import _common\n"
    )
    path = tmp_path / "x.py"
    path.write_text(src)
    modules = {m: Path() for m in ("faket_dask", "faket_dask.store", "faket_dask.kernels",
                                   "faket_dask.kernels.specimen", "faket_dask.errors", "faket_dask.cli",
                                   "faket_dask.stages", "faket_dask.stages._common", "faket_dask.stages.x")}
    got = [t for t, _ in imports_of("faket_dask.stages.x", path, modules)]
    assert got == ["faket_dask.store", "faket_dask.kernels.specimen", "faket_dask.errors",
                   "faket_dask.cli", "faket_dask.stages._common"]
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"], ["c"]]
    layers = {"errors": 1, "kernels": 2, "stages": 3}
    toy = {"faket_dask": [("faket_dask.stages.x", 1)],                        # the facade: exempt
           "faket_dask.kernels.a": [("faket_dask.errors", 1), ("faket_dask.stages.x", 7)],
           "faket_dask.stages.x": [("faket_dask.kernels.a", 2), ("faket_dask", 3)]}
    bad = upward_imports(toy, layers)
    assert len(bad) == 2 and "faket_dask.kernels.a (line 7)" in bad[0] and "facade" in bad[1]
