"""``python -m manybrains``: the command line (see :mod:`manybrains.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
