"""`smithers web`: the Textual app served to a browser by textual-serve, on a loopback address.
Each browser tab runs its own app process (`smithers --db DB`) in this project."""
from __future__ import annotations

import os
import shlex
import sys

from .api import check_bind

DEFAULT_PORT = 8420


def app_command(db: str) -> str:
    """The shell command textual-serve starts per browser tab."""
    return f"{shlex.quote(sys.executable)} -m smithers_tui --db {shlex.quote(db)}"


def exec_web(db: str, host: str, port: int) -> None:
    """Replace this process with the textual-serve server (it runs its own event loop and handles
    SIGINT/SIGTERM itself). There is no authentication: only loopback addresses are allowed."""
    check_bind(host, False, "the app, which has no authentication,")
    argv = [sys.executable, "-m", "smithers_tui.web", db, host, str(port)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def main(db: str, host: str, port: int) -> None:
    from textual_serve.server import Server

    print(f"smithers: the app on http://{host}:{port} (Ctrl+C stops it)", flush=True)
    Server(app_command(db), host=host, port=port, title="Smithers").serve()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
