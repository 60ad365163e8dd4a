"""The process guard: runs one command and guarantees nothing it started outlives it.

Started by the engine as `python -I -S engine/guard.py [options] -- ARGV...` (stdlib only, no
engine imports, so it starts in a few milliseconds, also inside the OS sandbox):

- it makes itself a *child subreaper* (PR_SET_CHILD_SUBREAPER): a grandchild that double-forks
  and calls setsid() is re-parented to the guard, not to init, so it can still be found;
- when the command exits, it kills every remaining descendant (SIGKILL, re-scanning until none
  is left) and exits with the command's status;
- `--lifeline FD`: the read end of a pipe whose write end only the engine holds; end of file
  there means the engine died (even by kill -9), and the guard kills everything and exits;
- SIGTERM / SIGINT / SIGHUP to the guard: the same;
- `--forward PORT=UNIX_SOCKET`: inside a sandbox with no network, listens on 127.0.0.1:PORT and
  relays each connection to a Unix socket the engine serves outside, which connects to exactly
  one allowed endpoint (a CLI agent's model API). Nothing else is reachable.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (parents before children)."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        parent[int(name)] = int(rest[1])
    kids: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def kill_all(me: int) -> None:
    """SIGKILL every descendant and reap, until none is left (re-parented ones included)."""
    for _ in range(1000):
        pids = descendants(me)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
    _reap()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _relay(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            r, _, _ = select.select([a, b], [], [])
            for s in r:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


def _forward(port: int, path: str) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(path)
            except OSError:
                conn.close()
                up.close()
                continue
            threading.Thread(target=_relay, args=(conn, up), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: guard.py [--lifeline FD] [--forward PORT=SOCKET]... -- COMMAND...", file=sys.stderr)
        return 2
    opts, cmd = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    lifeline = None
    i = 0
    while i < len(opts):
        if opts[i] == "--lifeline":
            lifeline = int(opts[i + 1])
        elif opts[i] == "--forward":
            port, path = opts[i + 1].split("=", 1)
            _forward(int(port), path)
        i += 2
    me = os.getpid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def die(signum: int, _frame: object = None) -> None:
        kill_all(me)
        os._exit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, die)
    wake_r, wake_w = os.pipe()  # SIGCHLD wakes the loop at once (no polling delay per command)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        child = subprocess.Popen(cmd, pass_fds=(), close_fds=True)
    except OSError as e:
        print(f"cannot run {cmd[0]!r}: {e.strerror or e}", file=sys.stderr)
        return 127
    status: int | None = None
    watch = [wake_r] + ([lifeline] if lifeline is not None else [])
    while status is None:
        ready, _, _ = select.select(watch, [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if lifeline is not None and lifeline in ready and not os.read(lifeline, 1):
            die(signal.SIGTERM)  # the engine is gone
        while True:  # reap: the command, or orphans re-parented to us
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child.pid:
                status = os.waitstatus_to_exitcode(st)
                break
    kill_all(me)
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
