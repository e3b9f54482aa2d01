"""Run the test suite on every Python from 3.10 to 3.13 found on this machine: ``nox``.

``.ci/run`` runs the README's test command on 3.11 first, then the other versions' sessions.
"""

from __future__ import annotations

import os

import nox

nox.options.error_on_missing_interpreters = False  # a missing interpreter is skipped
nox.options.sessions = ["tests"]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    # A last resort against a hung interpreter: every test has a hard timeout of its own.
    limit = os.environ.get("SUITE_TIMEOUT", "1200")
    session.run("timeout", limit, "python", "-m", "pytest", *session.posargs, external=True)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("ruff", "check", "src", "tests", "benchmarks")
    session.run("mypy")
