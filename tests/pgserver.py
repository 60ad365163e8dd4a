"""A real PostgreSQL server for tests and benchmarks: initdb into a temporary directory, a free
port on 127.0.0.1, pg_ctl start, and stop (and remove everything) at the end.

The server binaries come from Debian's `postgresql` package (`make test` installs it when they
are missing). initdb refuses to run as root: as root, the server runs as the unprivileged user
`postgres` (the package creates it) or, failing that, a `smithers-pg` user made for it.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SUPERUSER = "smithers"
PASSWORD = "smithers-test-password"


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres live (the newest Debian version, else PATH)."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: `make test` installs them "
                       "(apt-get install postgresql), or install them yourself")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """None when not root (the server runs as us); else an unprivileged user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "smithers-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "smithers-pg"],
                   check=True, capture_output=True)
    return "smithers-pg"


class PgServer:
    """One throwaway PostgreSQL cluster. `url(db)` names a database on it (as the superuser)."""

    def __init__(self, *, fsync: bool = True, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="smithers-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = port or free_port()
        self.fsync = fsync
        self.running = False

    # --- running the binaries as the server's user -----------------------------------------------
    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()} {tail}")
        return done

    def init(self) -> "PgServer":
        if self.user is not None:
            info = pwd.getpwnam(self.user)
            os.chown(self.root, info.pw_uid, info.pw_gid)
        self.root.chmod(0o755)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user is not None:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                  "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C",
                  "--no-sync")
        pwfile.unlink()
        conf = self.data / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                    f"max_connections = 300\nshared_buffers = 64MB\nfsync = {'on' if self.fsync else 'off'}\n"
                    "log_min_messages = warning\n")
        return self

    def start(self) -> "PgServer":
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases -----------------------------------------------------------------------------
    def url(self, db: str = "postgres", *, password: str = PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port or self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        done = self._run("psql" if (self.bindir / "psql").exists() else "psql", "-h", str(self.root), "-p",
                         str(self.port), "-U", SUPERUSER, "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql)
        return done.stdout

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; its URL."""
        name = name or "t_" + uuid.uuid4().hex[:12]
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    except OSError:
        return False
    return "c.utf8" in out or "c.utf-8" in out
