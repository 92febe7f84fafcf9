"""`python -m devsupport.snapshotter`: build the stargz snapshotter daemon (once) and print
its path."""

from __future__ import annotations

from devsupport import log_progress
from devsupport.snapshotter import binary


def main() -> None:
    log_progress()
    print(binary())


if __name__ == "__main__":
    main()
