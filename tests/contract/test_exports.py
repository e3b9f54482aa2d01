"""manybrains' public names: the two lists in ``__init__.py`` agree, every name resolves,
``dir(manybrains)`` shows only them, and each public class is ``manybrains.<name>``, printed
and pickled.

``__init__.py`` names each export twice: under ``TYPE_CHECKING`` (what type checkers and
editors see) and in ``_EXPORTS`` (what ``mb.X`` imports on first use). A name in one list
only is either invisible to type checkers or an ``AttributeError`` at run time.
"""

from __future__ import annotations

import ast
import importlib
import pickle
import subprocess
import sys
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


_CLASSES = sorted(name for name in mb._EXPORTS if isinstance(getattr(mb, name), type))


@pytest.mark.parametrize("name", _CLASSES)
def test_every_public_class_reports_manybrains_as_its_module(name: str):
    cls = getattr(mb, name)
    assert cls.__qualname__ == name
    assert cls.__module__ == "manybrains"
    assert repr(cls) == f"<class 'manybrains.{name}'>"


@pytest.mark.parametrize("name", _CLASSES)
def test_every_public_class_pickles_by_its_public_name(name: str):
    cls = getattr(mb, name)
    # protocol 0 spells the reference out: "c<module>\n<name>\n"
    assert pickle.dumps(cls, protocol=0).startswith(f"cmanybrains\n{name}\n".encode())
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_a_class_named_manybrains_resolves_there():
    """A class is renamed only where ``manybrains.<its qualname>`` is that class: pickle
    looks it up by that name. A renamed class that the package does not export is found."""
    for module_name in sorted(set(mb._EXPORTS.values())):
        module = importlib.import_module(module_name, "manybrains")
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == "manybrains":
                assert getattr(mb, value.__qualname__) is value, value


def test_exceptions_report_manybrains_before_the_package_hands_them_out():
    """Exceptions appear in tracebacks before a user names them: in a fresh interpreter, a
    ``WorkerCrashed`` raised by the engine shows as ``manybrains.WorkerCrashed``."""
    code = ("import traceback; from manybrains._errors import WorkerCrashed; "
            "from manybrains._remote import RemoteTraceback; "
            "print(traceback.format_exception_only(WorkerCrashed, WorkerCrashed('x'))[-1]"
            ".strip()); print(RemoteTraceback.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["manybrains.WorkerCrashed:", "x", "manybrains"]


def test_instances_and_exceptions_pickle_across_a_fresh_interpreter():
    """Unpickled where nothing of manybrains has been loaded yet: the lazy package resolves
    ``manybrains.WorkerCrashed`` and the others on the way."""
    values = [mb.WorkerCrashed("gone", pid=7, exitcode=-9), mb.PoolClosed("closed"),
              mb.UnpicklingFailed("bad"), mb.RemoteError("x.Y", "why"),
              mb.RemoteTraceback("tb"), mb.QueueClosed(), mb.Processes(),
              mb.WorkerStats("w", tasks=1, busy_s=0.5)]
    code = ("import pickle, sys; values = pickle.loads(sys.stdin.buffer.read()); "
            "print([f'{type(v).__module__}.{type(v).__qualname__}' for v in values]); "
            "print(values[0].pid, values[0].exitcode, values[-1].tasks)")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(values),
                         capture_output=True, check=True).stdout.decode().splitlines()
    assert out == [repr([f"manybrains.{type(v).__qualname__}" for v in values]), "7 -9 1"]
