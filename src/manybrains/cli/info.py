"""``manybrains info``: what this machine and interpreter offer to parallel work."""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

HELP = "show usable CPUs, start methods, the GIL, the Python version and the backends"


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help=HELP, description=HELP + ".")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def facts() -> dict[str, Any]:
    """Everything ``info`` reports, as plain data."""
    from .. import __version__
    from .._cpus import usable_cpus
    from ..backends.auto.policy import gil_enabled
    from ..backends.processes.context import available_start_methods, default_start_method

    return {
        "manybrains": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(terse=True),
        "cpus_usable": usable_cpus(),
        "cpus_machine": os.cpu_count(),
        "gil_enabled": gil_enabled(),
        "start_methods": available_start_methods(),
        "default_start_method": default_start_method(),
        "backends": _backends(),
    }


def _backends() -> dict[str, str | None]:
    """Each backend: None when usable, else what to install for it."""
    from ..backends import available_backends, install_hint, known_backends

    usable = available_backends()
    return {name: None if name in usable else install_hint(name) for name in known_backends()}


def run(args: argparse.Namespace) -> int:
    found = facts()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    methods = ", ".join(m + (" (default)" if m == found["default_start_method"] else "")
                        for m in found["start_methods"])
    ready = [name for name, hint in found["backends"].items() if hint is None]
    lines = [
        f"manybrains    {found['manybrains']}",
        f"python        {found['python']} on {found['platform']}",
        f"CPUs          {found['cpus_usable']} usable (machine: {found['cpus_machine']})",
        f"GIL           {'enabled' if found['gil_enabled'] else 'disabled (free-threaded)'}",
        f"start methods {methods}",
        f"backends      {', '.join(ready)}",
    ]
    lines += [f"  {name:<11} missing: {hint}" for name, hint in found["backends"].items()
              if hint is not None]
    print("\n".join(lines))
    return 0
