"""``manybrains info``'s backend list comes from the registry's public functions."""

from __future__ import annotations

import pytest

import manybrains.backends as backends
from manybrains.cli import info


def test_every_backend_is_listed_with_what_a_missing_one_needs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(backends, "available_backends", lambda: ("processes", "threads"))
    found = info.facts()["backends"]
    assert list(found) == list(backends.known_backends())
    assert found["processes"] is None and found["threads"] is None
    assert found["dask"] == "pip install 'manybrains[dask]'"
    assert found["inline"] == "reinstall manybrains"  # it needs nothing: the install is broken
