"""The package layout's rules: imports run one way (docs/architecture.md).

Reads every module's imports with ``ast`` (nothing is imported or run), the
ones inside functions and under ``if TYPE_CHECKING:`` included: a type-only
import still ties two modules together for a reader, and it is how circles
start. Generated code (``mkv/v1``, ``mkv/std``) is a leaf anyone may import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("mkv.v1", "mkv.std", "mkv.etcd.pb")

# (importing package, packages it may not import, why): the lines the layout
# draws. A package is a dotted prefix: "mkv.node" covers mkv.node.server.
FORBIDDEN: list[tuple[str, tuple[str, ...], str]] = [
    (
        "mkv.client",
        ("mkv.node", "mkv.partition", "mkv.store", "mkv.snapshots", "mkv.pipeline", "mkv.wal"),
        "the client must run without the server's code (shared types live in leaf modules)",
    ),
    (
        "mkv.store",
        ("mkv.partition", "mkv.node", "mkv.pipeline"),
        "a store applies writes it is given; it knows no partition, node or stage",
    ),
    (
        "mkv.rpc",
        ("mkv.node", "mkv.partition", "mkv.store", "mkv.pipeline", "mkv.snapshots", "mkv.observe"),
        "the gRPC transport knows no mkv service (it reports calls to an RpcObserver)",
    ),
    (
        "mkv.observe",
        ("mkv.node", "mkv.partition", "mkv.store", "mkv.pipeline", "mkv.snapshots"),
        "metrics and logs are handed their numbers; they reach into nothing",
    ),
    (
        "mkv.pipeline",
        ("mkv.node", "mkv.partition", "mkv.observe", "mkv.snapshots"),
        "stages report through their StageContext, not by importing who listens",
    ),
    (
        "mkv.partition",
        ("mkv.node", "mkv.snapshots", "mkv.client", "mkv.rpc"),
        "a partition is run by the node; it does not call back into it",
    ),
    (
        "mkv.wal",
        ("mkv.pipeline", "mkv.partition", "mkv.node", "mkv.snapshots"),
        "the log is a file format and its reader and writer; the wal stage uses it",
    ),
    (
        "mkv.snapshots",
        ("mkv.node", "mkv.client", "mkv.rpc"),
        "snapshots are taken and restored for the node, which calls them",
    ),
    (
        "mkv.operations",
        ("mkv.node", "mkv.snapshots", "mkv.partition"),
        "long-running operations sit below the node and snapshots, which both use them",
    ),
    (
        "mkv.etcd",
        (
            "mkv.node",
            "mkv.partition",
            "mkv.store",
            "mkv.pipeline",
            "mkv.wal",
            "mkv.snapshots",
            "mkv.operations",
            "mkv.client",
            "mkv.observe",
        ),
        "the etcd client is a transport the node uses; it knows no mkv service or store",
    ),
    (
        "mkv.sidecar",
        ("mkv.node", "mkv.partition", "mkv.pipeline", "mkv.wal", "mkv.client", "mkv.rpc"),
        "the sidecar is its own process: it reads snapshot files, not the node",
    ),
]

# Modules at the top of mkv/ that client and server share: they import only
# each other and generated code, so either side may use them.
SHARED_LEAVES = (
    "mkv.errors",
    "mkv.wire",
    "mkv.router",
    "mkv.records",
    "mkv.limits",
    "mkv.worker",
    "mkv.units",
    "mkv.version",
)

# The rows of docs/architecture.md's picture, top first: a package (or
# top-level module) imports only packages of lower rows. Every package must
# be in a row, so a new one gets a place before it gets imports.
LAYERS: list[tuple[str, ...]] = [
    ("mkv.cli", "mkv.testing", "mkv"),
    ("mkv.node", "mkv.sidecar", "mkv.client"),
    ("mkv.snapshots",),
    ("mkv.partition", "mkv.operations"),
    ("mkv.pipeline",),
    ("mkv.wal",),
    ("mkv.store",),
    # The etcd client sits just above the transport it extends (rpc/).
    ("mkv.etcd",),
    ("mkv.rpc", "mkv.observe"),
    SHARED_LEAVES,
]


def module_files(root: Path) -> dict[str, Path]:
    """Every mkv module under ``root``, by dotted name (packages by their own name)."""
    modules: dict[str, Path] = {}
    for path in sorted((root / "mkv").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if not name.startswith(GENERATED):
            modules[name] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module, or a name inside one) belongs to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The mkv modules ``name`` imports, with the line of each import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # "from mkv.partition import task" imports a module; "from mkv.feed
            # import Change" a name inside one.
            targets = [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            if not target.startswith("mkv.") or target.startswith(GENERATED):
                continue
            owner = _owner(target, modules)
            if owner is not None and owner != name:
                yield owner, node.lineno


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import}."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path, modules):
            edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_through(group, graph) for group in groups]


def _circle_through(group: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*paths[node], start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    return group


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def crossings(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import that crosses a line the layout draws, as one sentence each."""
    found = []
    for source, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            for package, forbidden, why in FORBIDDEN:
                if _inside(source, package) and any(_inside(target, f) for f in forbidden):
                    found.append(f"{source} imports {target} (line {line}): {why}")
            if source in SHARED_LEAVES and target not in SHARED_LEAVES:
                found.append(
                    f"{source} imports {target} (line {line}): a shared leaf module "
                    f"imports only other shared leaves ({', '.join(SHARED_LEAVES)})"
                )
    return found


def test_no_import_circles() -> None:
    circles = cycles(import_graph(ROOT))
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def package(name: str) -> str:
    """``mkv.node`` for ``mkv.node.server``; a top-level module is its own package."""
    return ".".join(name.split(".")[:2])


def packages(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The graph between packages (mkv.node, mkv.store, ...; a top-level module alone)."""
    collapsed: dict[str, dict[str, int]] = {}
    for source, edges in graph.items():
        into = collapsed.setdefault(package(source), {})
        for target, line in edges.items():
            if package(target) != package(source):
                into.setdefault(package(target), line)
    return collapsed


def test_no_circles_between_packages() -> None:
    """The packages themselves form layers: node above snapshots above partition..."""
    graph = import_graph(ROOT)
    circles = cycles(packages(graph))
    assert not circles, "packages importing each other:\n" + "\n".join(
        " -> ".join(c) for c in circles
    )


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports that do not point down the rows of LAYERS, one sentence each."""
    row = {name: number for number, names in enumerate(LAYERS) for name in names}
    found = []
    for source, edges in sorted(graph.items()):
        here = package(source)
        if here not in row:
            found.append(f"{here} (from {source}) is in no row of LAYERS: give it a place")
            continue
        for target, line in sorted(edges.items()):
            there = package(target)
            if there == here or (here in SHARED_LEAVES and there in SHARED_LEAVES):
                continue
            if there in row and row[there] <= row[here]:
                found.append(
                    f"{source} imports {target} (line {line}): {there} is not below {here} "
                    "in docs/architecture.md's rows"
                )
    return sorted(set(found))


def test_imports_point_down_the_rows() -> None:
    found = upward_imports(import_graph(ROOT))
    assert not found, "imports that do not point down:\n" + "\n".join(found)


def test_no_import_crosses_a_layer() -> None:
    found = crossings(import_graph(ROOT))
    assert not found, "imports that cross the layout's lines:\n" + "\n".join(found)


def test_the_shared_leaves_and_packages_exist() -> None:
    """The rules above name real modules: a rename must update them."""
    modules = module_files(ROOT)
    for package, forbidden, _ in FORBIDDEN:
        for name in (package, *forbidden):
            assert name in modules, f"{name} is named in FORBIDDEN but is not a package"
    for row in LAYERS:
        for name in row:
            assert name in modules, f"{name} is named in LAYERS but does not exist"


# -- the checker itself, on a small tree written for the purpose ------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    return _tree(
        tmp_path,
        {
            "mkv/__init__.py": "",
            "mkv/errors.py": "",
            "mkv/client/__init__.py": "",
            "mkv/client/data.py": "from mkv.errors import x\n",
            "mkv/node/__init__.py": "",
            "mkv/node/config.py": "from mkv import errors\nfrom mkv.v1 import data_pb2\n",
        },
    )


def test_a_client_module_reaching_the_node_is_named(small_tree: Path) -> None:
    assert crossings(import_graph(small_tree)) == []
    data = small_tree / "mkv/client/data.py"
    data.write_text(data.read_text() + "from mkv.node.config import DEFAULT_DATA_ADDR\n")
    [message] = crossings(import_graph(small_tree))
    assert message.startswith("mkv.client.data imports mkv.node.config (line 2)"), message


def test_a_circle_is_named_module_by_module(small_tree: Path) -> None:
    assert cycles(import_graph(small_tree)) == []
    (small_tree / "mkv/errors.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from mkv.client.data import Client\n"
    )
    (small_tree / "mkv/node/config.py").write_text("from ..client import data\n")
    circle = ["mkv.client.data", "mkv.errors", "mkv.client.data"]
    assert cycles(import_graph(small_tree)) == [circle]
