"""``python -m compat``: the command-line checker."""

from compat.cli import main

raise SystemExit(main())
