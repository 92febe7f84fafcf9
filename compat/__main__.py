"""``python -m compat``: ``daskhub-compat``, for an interpreter without its script."""

from compat.cli import main

raise SystemExit(main())
