"""The package's layers point down: docs/architecture.md's rules, checked on the source.

Each module of ``src/manybrains`` belongs to one layer (``LAYERS``, first match of its
dotted name). A module may import from its own layer and the layers below, never above; a
backend never reaches into another backend's modules (``auto`` composes the others through
the registry, and borrows the engine's template holder); and no module imports another
package's private name. A new module fails this test until it is given a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import manybrains

SOURCE = Path(manybrains.__file__).resolve().parent

# (layer, module-name prefixes), lowest first. A prefix matches the module and its children.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("_errors", "_remote", "_cpus", "_arguments", "_future", "_chunking",
                     "_timings", "_mainspace", "_mp_primitives", "ipc.segment")),
    ("ipc and pickling", ("ipc", "_serialize", "_task")),
    ("contract", ("backends._base", "backends._wire", "backends.__init__", "options",
                  "_other_options", "progress")),
    ("backends", ("backends",)),
    ("pools", ("_stream", "_async_result", "_multiprocessing_api", "_async_pool", "_pool",
               "_executor", "_spawn", "insights")),
    ("user-facing", ("_api", "advisor", "integrations", "cli", "__main__", "__init__")),
]

# Where one backend may use another's modules, and why.
BACKEND_EXCEPTIONS = {
    # auto holds a template from its start so that later process pools fork from it
    ("auto", "processes"): "backends.processes.context",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts)


def _layer(name: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in {__file__} "
                         "and to docs/architecture.md")


def _package(name: str, is_package: bool) -> list[str]:
    parts = name.split(".")
    if is_package:  # the package's own __init__: relative imports start inside it
        return parts[:-1]
    return parts[:-1]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import of manybrains code."""
    name = _module_name(path)
    here = _package(name, path.name == "__init__.py")
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("manybrains"):
                target = (node.module or "").removeprefix("manybrains").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            if node.module is None:  # "from . import x": x is a module, or a name of "."
                found += [(f"{target}.{n}".lstrip("."), [], node.lineno) if _is_module(
                    f"{target}.{n}".lstrip(".")) else (target or "__init__", [n], node.lineno)
                    for n in names]
            else:
                found.append((target or "__init__", names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("manybrains").lstrip(".") or "__init__", [],
                       node.lineno) for a in node.names if a.name.startswith("manybrains")]
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (a type may name any layer)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            pending += node.orelse
            continue
        pending += ast.iter_child_nodes(node)
    return nodes


def _is_module(name: str) -> bool:
    path = SOURCE / Path(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").exists()


def _resolve(target: str) -> str:
    """The module file an import names: ``backends`` is ``backends.__init__``."""
    if (SOURCE / Path(*target.split("."))).is_dir():
        return f"{target}.__init__" if target else "__init__"
    return target


MODULES = sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down(path: Path) -> None:
    name = _module_name(path)
    rank = _layer(name)
    for target, names, line in _imports(path):
        target = _resolve(target)
        if not (SOURCE / Path(*target.split("."))).with_suffix(".py").exists():
            target = target.rsplit(".", 1)[0]  # "from .pkg import module_or_name"
            target = _resolve(target)
        assert _layer(target) <= rank, (
            f"{name}:{line} imports {target}, which sits in a higher layer "
            f"({LAYERS[_layer(target)][0]} above {LAYERS[rank][0]})")
        _check_backends_apart(name, target, line)
        _check_private_names(name, target, names, line)


def _check_backends_apart(name: str, target: str, line: int) -> None:
    mine, theirs = _backend_of(name), _backend_of(target)
    if mine is None or theirs is None or mine == theirs:
        return
    allowed = BACKEND_EXCEPTIONS.get((mine, theirs))
    assert allowed is not None and target.startswith(allowed), (
        f"{name}:{line} reaches into the {theirs} backend ({target}); backends meet only "
        "through backends._base, backends._wire and the registry")


def _backend_of(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "backends" or parts[1].startswith("_"):
        return None
    return parts[1].removesuffix("_loop") if parts[1] != "__init__" else None


def _check_private_names(name: str, target: str, names: list[str], line: int) -> None:
    same_package = target.rsplit(".", 1)[0] == name.rsplit(".", 1)[0]
    private = [n for n in names if n.startswith("_") and not n.startswith("__")]
    assert same_package or not private, (
        f"{name}:{line} imports the private {', '.join(private)} of {target}: make it public "
        "there, or move the code that needs it")


def test_the_layer_table_knows_every_module() -> None:
    unknown = [m for m in map(_module_name, MODULES)
               if not any(_covers(p, m) for _, prefixes in LAYERS for p in prefixes)]
    assert not unknown, f"give these modules a layer in LAYERS: {unknown}"


def _covers(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")
