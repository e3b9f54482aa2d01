"""The ``manybrains`` command line (also ``python -m manybrains``).

    manybrains info                      this machine: CPUs, start methods, GIL, backends
    manybrains compare [--quick]         the threads / asyncio / processes cheat sheet, measured
    manybrains map MODULE:FUNCTION FILE  a function over every line of a file, on every core

Every command has ``--help``. A bad argument ends the command with exit status 2 and one
line on stderr saying what was wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from . import compare, info, mapping
from .errors import UsageError

_COMMANDS = {"info": info, "compare": compare, "map": mapping}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> tuple[argparse.ArgumentParser, Mapping[str, argparse.ArgumentParser]]:
    """The top-level parser, and each command's."""
    from .. import __version__

    parser = _Parser(prog="manybrains",
                     description="Parallel Python on every core: measure, compare, map.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Run 'manybrains COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"manybrains {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in _COMMANDS.items():
        module.add_parser(commands, name)
    return parser, commands.choices


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``manybrains`` and ``python -m manybrains``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--quick"]:  # the first demo's spelling: the quick comparison
        args_list.insert(0, "compare")
    parser, commands = build_parser()
    if args_list[:1] and args_list[0] in commands:
        # Each command parses its own arguments, options and positionals in any order
        # (``map f --workers 2 input.txt``), which argparse's subcommands cannot do.
        args = commands[args_list[0]].parse_intermixed_args(args_list[1:])
        args.command = args_list[0]
    else:
        parser.parse_args(args_list)  # --help, --version, or an unknown command: exits
        parser.error("choose a command: " + ", ".join(_COMMANDS))
    try:
        status: int = _COMMANDS[args.command].run(args)
    except UsageError as exc:
        print(f"manybrains {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"manybrains {args.command}: interrupted", file=sys.stderr)
        return 130
    return status
