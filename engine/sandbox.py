"""The OS sandbox for `run_shell` and CLI agents: bubblewrap where the OS allows, else a fallback.

Inside bubblewrap (Debian's `bubblewrap` package) a command sees:

- the whole filesystem read-only, the step's working directory writable, and nothing else
  writable but a private `/tmp` and the paths the policy adds (a CLI agent's own state folder);
- the working directory's `.git` read-only (hooks and config cannot be planted);
- its own PID namespace: `/proc` shows only the sandbox, so `/proc/$PPID/environ` holds nothing
  of the engine's, and when the command ends the namespace ends with it — a double-forked daemon
  dies too;
- its own network namespace with only loopback, unless the policy allows the network: `full`
  shares the host's, `endpoint` relays exactly the allowed model endpoints (host:port) through a
  Unix socket served by the engine, so a CLI agent reaches its API and nothing else.

Where bubblewrap is missing or may not create namespaces (some containers), `wrap()` says so once
per step and the command runs with the in-process confinement only (path checks in the file
tools, the allowlisted environment, the guard that ends every descendant). `status()` tells
which applies (`smithers agents` prints it).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import sys
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Literal
from urllib.parse import urlsplit

from . import procs

Mode = Literal["auto", "bwrap", "off"]
Network = Literal["none", "endpoint", "full"]
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap) for the OS sandbox"


class SandboxUnavailable(Exception):
    """mode = "bwrap" was required but bubblewrap cannot run here."""


@dataclass
class Policy:
    """How one step's processes are confined."""

    mode: Mode = "auto"
    network: Network = "none"
    endpoints: list[str] = field(default_factory=list)  # URLs or host:port reachable when network="endpoint"
    writable: list[Path] = field(default_factory=list)  # besides the working directory and /tmp
    read_only: bool = False  # the working directory itself read-only too (a read-only step)

    def active(self) -> bool:
        """Will bubblewrap confine the command?"""
        return self.mode != "off" and status()[0]


@functools.lru_cache(maxsize=1)
def status() -> tuple[bool, str]:
    """(bubblewrap usable here?, why not / which binary). Probed once per process."""
    exe = shutil.which("bwrap")
    if not exe:
        return False, f"bubblewrap not found: {INSTALL_HINT}"
    try:
        p = subprocess.run([exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                            "--unshare-net", "--die-with-parent", "true"], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"bubblewrap cannot run here ({e})"
    if p.returncode != 0:
        why = " ".join((p.stderr or "").split())[:200] or f"exit {p.returncode}"
        return False, f"bubblewrap is installed but not permitted here ({why})"
    return True, exe


def describe() -> str:
    """One line for `smithers agents`: which confinement applies here."""
    ok, why = status()
    if ok:
        return ("OS sandbox: bubblewrap (worktree the only writable path, private /tmp, own PID and network "
                "namespaces)")
    return f"OS sandbox: not in use, {why}; fallback: path checks, allowlisted environment, process guard"


def endpoint_of(url: str) -> tuple[str, int] | None:
    """(host, port) of a URL or host:port."""
    if "://" not in url:
        url = "http://" + url
    try:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    return (u.hostname, port) if u.hostname else None


@dataclass
class Wrapped:
    """A command ready to spawn, and what to clean up after it."""

    argv: list[str]
    sandboxed: bool
    note: str = ""  # the fallback message, when the sandbox is not used
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    tmpdir: str | None = None

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        self.servers.clear()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


async def wrap(argv: list[str], workdir: Path, policy: Policy | None) -> Wrapped:
    """`argv` confined by `policy`, then guarded (see engine/procs.py). Raises SandboxUnavailable
    only when the policy requires bubblewrap and it cannot run."""
    policy = policy or Policy()
    if policy.mode == "off":
        return Wrapped(procs.guarded(argv), False)
    ok, why = status()
    if not ok:
        if policy.mode == "bwrap":
            raise SandboxUnavailable(f"the OS sandbox is required ([sandbox] mode = \"bwrap\") but {why}")
        return Wrapped(procs.guarded(argv), False, note=f"OS sandbox not used: {why}; running with path checks, "
                                                       "an allowlisted environment and the process guard")
    root = os.path.realpath(workdir)
    out = Wrapped([], True)
    cmd = [why, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session",
           "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for tree in sorted(_under_tmp(argv[0], sys.executable, procs.GUARD)):  # programs kept under /tmp stay visible
        cmd += ["--ro-bind", tree, tree]
    cmd += ["--ro-bind" if policy.read_only else "--bind", root, root]
    for p in policy.writable:
        p = Path(os.path.realpath(p))
        if p.exists():
            cmd += ["--bind", str(p), str(p)]
    git = Path(root) / ".git"
    if git.exists() or git.is_symlink():
        cmd += ["--ro-bind", str(git), str(git)]
    forwards: dict[int, str] = {}
    if policy.network != "full":
        cmd += ["--unshare-net"]
    if policy.network == "endpoint" and policy.endpoints:
        out.tmpdir = tempfile.mkdtemp(prefix="smithers-net-")
        hosts: list[str] = []
        for i, ep in enumerate(policy.endpoints):
            hp = endpoint_of(ep)
            if hp is None or hp[1] in forwards:
                continue
            host, port = hp
            sock = os.path.join(out.tmpdir, f"ep{i}.sock")
            out.servers.append(await asyncio.start_unix_server(_relay_to(host, port), path=sock))
            forwards[port] = sock
            if not _is_ip(host) and host != "localhost":
                hosts.append(host)
        if hosts:  # names resolve to the relay inside; TLS still verifies the real name end to end
            hosts_file = os.path.join(out.tmpdir, "hosts")
            Path(hosts_file).write_text("127.0.0.1 localhost " + " ".join(hosts) + "\n::1 localhost\n")
            cmd += ["--ro-bind", hosts_file, "/etc/hosts"]
        cmd += ["--bind", out.tmpdir, out.tmpdir]
        if any(p < 1024 for p in forwards) and os.geteuid() == 0:
            cmd += ["--cap-add", "CAP_NET_BIND_SERVICE"]
    cmd += ["--chdir", root, "--"]
    out.argv = procs.guarded(cmd + procs.guarded(argv, forwards=forwards, inner=True))
    return out


def _under_tmp(*programs: str) -> set[str]:
    """What must stay visible under the private /tmp for these programs to run: for each one kept
    under /tmp (a project cloned there, its .venv and tools/), the tree it runs from — its
    node_modules, its virtual environment (the guard runs on this Python), else its folder."""
    out: set[str] = set()
    for prog in programs:
        for exe in {prog, os.path.realpath(prog)}:
            if not (os.path.isabs(exe) and exe.startswith("/tmp/")):
                continue
            tree = os.path.dirname(exe)
            for parent in Path(exe).parents:
                if parent.name == "node_modules" or (parent / "pyvenv.cfg").exists():
                    tree = str(parent)
                    break
                if str(parent) == "/tmp":
                    break
            out.add(tree)
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _relay_to(host: str, port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                try:
                    w.close()
                except OSError:
                    pass

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    return handle
