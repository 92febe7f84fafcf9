"""Serve the conda-forge stand-in over HTTP on 127.0.0.1, as conda-forge is served.

The builds fetch packages from the channel's URLs inside BuildKit, exactly as they do
from conda-forge in production, so the channel must be a real web server, not a folder.
Python's threading HTTP server is enough: it serves static files (repodata.json and
archives) with Content-Length, which is all a conda client asks of a channel.

`ensure_server()` starts one detached server per port and reuses it while it serves the
current stand-in folder; the folder is a symlink that a rebuild moves, so a running server
serves rebuilt packages too.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from buildtool.common import BuildToolError, cache_root
from devsupport.standin.channel import CHANNEL_NAME, KEY_FILE

DEFAULT_PORT = 8321
READY_TIMEOUT = 20.0


def standin_port() -> int:
    return int(os.environ.get("DASKHUB_STANDIN_PORT", DEFAULT_PORT))


def channel_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or standin_port()}/{CHANNEL_NAME}"


def _served_key(port: int) -> str | None:
    """The key of the stand-in a server on port serves, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{KEY_FILE}", timeout=2) as answer:
            return answer.read().decode().strip()
    except OSError:
        return None


def ensure_server(root: Path, port: int | None = None) -> str:
    """Serve root (holding conda-forge/) on 127.0.0.1:port; return the channel URL."""
    port = port or standin_port()
    key = (root / KEY_FILE).read_text().strip()
    served = _served_key(port)
    if served == key:
        return channel_url(port)
    if served is not None:
        raise BuildToolError(
            f"127.0.0.1:{port} already serves another stand-in ({served}, not {key}); "
            "stop it or set DASKHUB_STANDIN_PORT"
        )
    log = cache_root() / "standin" / f"server-{port}.log"
    with log.open("ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "devsupport.standin.server", str(root), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while _served_key(port) != key:
        if time.monotonic() > deadline:
            tail = "".join(log.read_text(errors="replace").splitlines(True)[-10:])
            raise BuildToolError(f"the stand-in server did not answer on port {port}:\n{tail}")
        time.sleep(0.2)
    return channel_url(port)


class ChannelRequestHandler(SimpleHTTPRequestHandler):
    """Static files, always answered in full, and only errors logged.

    Conditional requests get the whole file, never 304: rattler revalidates its cached
    sharded-repodata index with If-Modified-Since and fails on a 304 for it.
    """

    def send_head(self):  # noqa: ANN201 (the base class's signature)
        del self.headers["If-Modified-Since"]
        del self.headers["If-None-Match"]
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if len(args) > 1 and str(args[1]).startswith(("4", "5")):
            super().log_message(format, *args)


def serve(root: Path, port: int) -> None:
    handler = functools.partial(ChannelRequestHandler, directory=str(root))
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a stand-in channel folder over HTTP")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    serve(args.root, args.port)


if __name__ == "__main__":
    main()
