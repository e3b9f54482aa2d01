"""``python -m manybrains``: the command line (see :mod:`manybrains.cli`)."""

from .cli import main

raise SystemExit(main())
