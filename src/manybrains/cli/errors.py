"""The one error the commands raise on purpose."""

from __future__ import annotations


class UsageError(Exception):
    """A bad argument found after parsing (a missing file, an unknown function): exit 2."""
