"""Who owns a run: a live process here, a dead one, a reused pid, another host's fresh or stale lease."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from engine.lease import STALE_AFTER_S, Owner, owner_alive
from engine.records import OwnerInfo


def row(**kw):
    """The lease as the store returns it (None when nobody owns the run)."""
    me = Owner.me()
    base = {"owner_id": "x", "owner_host": me.host, "owner_pid": me.pid, "owner_started": me.started,
            "heartbeat_at": time.time(), **kw}
    if not base["owner_id"]:
        return None
    return OwnerInfo(base["owner_id"], base["owner_host"], base["owner_pid"], base["owner_started"],
                     base["heartbeat_at"])


def test_this_process_is_alive():
    assert owner_alive(row())


def test_no_owner_is_not_alive():
    assert not owner_alive(row(owner_id=None))


def test_a_dead_process_on_this_host_is_taken_over_at_once_even_with_a_fresh_heartbeat():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not owner_alive(row(owner_pid=p.pid, owner_started=None, heartbeat_at=time.time()))


def test_a_reused_pid_is_not_the_owner():
    assert not owner_alive(row(owner_started=(Owner.me().started or 0) + 12345))


def test_another_hosts_lease_is_alive_until_its_heartbeat_is_stale():
    other = socket.gethostname() + "-elsewhere"
    assert owner_alive(row(owner_host=other, owner_pid=os.getpid() + 10**6, heartbeat_at=time.time() - 1))
    stale = time.time() - STALE_AFTER_S - 1
    assert not owner_alive(row(owner_host=other, heartbeat_at=stale))
