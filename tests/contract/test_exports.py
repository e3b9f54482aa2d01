"""manybrains' public names: the two lists in ``__init__.py`` agree, every name resolves,
and ``dir(manybrains)`` shows only them.

``__init__.py`` names each export twice: under ``TYPE_CHECKING`` (what type checkers and
editors see) and in ``_EXPORTS`` (what ``mb.X`` imports on first use). A name in one list
only is either invisible to type checkers or an ``AttributeError`` at run time.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import manybrains as mb

INIT = Path(mb.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module (relative, as ``_EXPORTS`` writes it) of the TYPE_CHECKING block."""
    tree = ast.parse(INIT.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    found: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name} must be imported 'as' itself"
            found[alias.name] = "." * node.level + (node.module or "")
    return found


def test_the_type_checking_imports_and_the_lazy_exports_agree():
    assert _type_checking_imports() == mb._EXPORTS


def test_all_lists_every_export():
    assert sorted(mb.__all__) == sorted(mb._EXPORTS)


@pytest.mark.parametrize("name", sorted(mb._EXPORTS))
def test_every_export_resolves_to_what_its_module_defines(name: str):
    module = importlib.import_module(mb._EXPORTS[name], "manybrains")
    assert getattr(mb, name) is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        mb.Nope  # noqa: B018


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def test_dir_shows_the_public_names_and_dunders_only():
    for name in ("Pool", "SharedArray", "Dask"):  # loads submodules, which must not show
        getattr(mb, name)
    names = dir(mb)
    assert [n for n in names if not _is_dunder(n)] == sorted(mb.__all__)
    assert names == sorted(names)
    for helper in ("Any", "TYPE_CHECKING", "annotations", "importlib"):
        assert not hasattr(mb, helper), helper

