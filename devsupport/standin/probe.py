"""`daskhub_probe`: a hostile package of the stand-in, for the sandbox tests.

The stand-in packs this file as the conda package `daskhub-probe` (linux-64), the one
module `daskhub_probe`. Imported, it does what a hostile addition's code could do inside
an image test: it tries to reach a listener on the host (`PORT` on this machine's
loopback, the Docker bridge's gateway and the container's default route), and, inside a
container only, forks until something stops it. Then it fails the import, saying what
it managed. Nothing else installs it: a spec must ask for it by name.
"""

import os
import socket
import struct
import time

PORT = 47813


def _gateway() -> str | None:
    """The default route's gateway, from /proc/net/route (the host, seen from a bridge)."""
    try:
        with open("/proc/net/route") as routes:
            for line in routes.readlines()[1:]:
                fields = line.split()
                if fields[1] == "00000000":
                    return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    except OSError:
        pass
    return None


def _reached() -> list[str]:
    reached = []
    for host in {"127.0.0.1", "172.17.0.1", _gateway() or "127.0.0.1"}:
        try:
            socket.create_connection((host, PORT), timeout=1).close()
            reached.append(host)
        except OSError:
            pass
    return reached


def _forked() -> int:
    """Forks sleepers until the kernel says no (at most 5000), inside a container only."""
    forks = 0
    if not os.path.exists("/.dockerenv"):
        return forks
    try:
        while forks < 5000:
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            forks += 1
    except OSError:
        pass
    return forks


raise RuntimeError(
    f"daskhub-probe: reached {_reached() or 'nothing'}, forked {_forked()} processes"
)
