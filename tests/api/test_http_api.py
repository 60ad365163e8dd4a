"""The HTTP API end to end: a real `smithers serve` (uvicorn on 127.0.0.1) driven with httpx, next
to the real CLI on the same database. Bodies equal the CLI's --json output; events stream live;
an approve racing a CLI deny has exactly one winner; a missing or wrong token gets 401 and writes
nothing; malformed bodies get 422 naming the field."""
from __future__ import annotations

import asyncio
import json
import signal
import stat
from typing import Any, AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Smithers, clean_env, smithers_argv

CONTRACT_ROUTES = {
    ("get", "/workflows"), ("post", "/runs"), ("get", "/runs"), ("get", "/runs/{run_id}"),
    ("get", "/runs/{run_id}/frames"), ("get", "/runs/{run_id}/events"), ("post", "/runs/{run_id}/approve"),
    ("post", "/runs/{run_id}/deny"), ("post", "/runs/{run_id}/cancel"), ("post", "/runs/{run_id}/resume"),
    ("post", "/runs/{run_id}/fork"), ("post", "/runs/{run_id}/rewind"), ("post", "/runs/{run_id}/replay"),
    ("get", "/healthz"), ("get", "/metrics"),
}


def cli(server: Any) -> Smithers:
    return Smithers(server.project, server.db)


async def sse(client: httpx.AsyncClient, url: str, **kw: Any) -> AsyncIterator[dict[str, str]]:
    """Server-sent events as dicts (id, event, data), as they arrive."""
    async with client.stream("GET", url, timeout=None, **kw) as resp:
        async for ev in parse(resp):
            yield ev


async def parse(resp: httpx.Response) -> AsyncIterator[dict[str, str]]:
    assert resp.status_code == 200, await resp.aread()
    assert resp.headers["content-type"].startswith("text/event-stream")
    ev: dict[str, str] = {}
    async for line in resp.aiter_lines():
        if not line:
            if "data" in ev:
                yield ev
            ev = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            ev[key] = value[1:] if value.startswith(" ") else value


async def until_waiting(client: httpx.AsyncClient, server: Any, run_id: str) -> list[dict[str, Any]]:
    """Follow the run's events until it waits at its gate."""
    seen = []
    async for ev in sse(client, f"{server.url}/runs/{run_id}/events", headers=server.auth):
        seen.append(json.loads(ev["data"]))
        if seen[-1].get("type") == "run_waiting":
            return seen
    raise AssertionError(f"the stream ended before the gate: {seen}")


async def test_start_follow_live_events_approve_and_bodies_equal_the_cli_json(server):
    async with httpx.AsyncClient(headers=server.auth) as client:
        r = await client.post(f"{server.url}/runs", json={"workflow": "gated", "input": {"n": 4}})
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        seen = await until_waiting(client, server, run_id)
        assert [e["type"] for e in seen][:2] == ["run_started", "node_started"]
        assert any(e["type"] == "log" and e["data"]["message"] == "preparing" for e in seen)

        assert "approval_requested" in [e["type"] for e in seen]

        # a stream open before the approval gets what happens next, live: the decision and the end
        url = f"{server.url}/runs/{run_id}/events?since={seen[-1]['seq']}"
        async with client.stream("GET", url, timeout=None) as resp:  # its headers arrived: it is live
            r = await client.post(f"{server.url}/runs/{run_id}/approve", json={"note": "looks good"})
            assert r.status_code == 200, r.text
            assert r.json()["decision"] == "approved" and r.json()["note"] == "looks good"
            live = [ev async for ev in parse(resp)]
        types = [json.loads(e["data"]).get("type") for e in live if e.get("event") != "end"]
        assert types[0] == "approval_decided" and "run_finished" in types
        assert live[-1]["event"] == "end" and json.loads(live[-1]["data"])["status"] == "finished"
        seqs = [int(e["id"]) for e in live if "id" in e]
        assert seqs == sorted(seqs) and seqs[0] > seen[-1]["seq"]

        # the same bodies as the CLI's --json
        show = cli(server).json("show", run_id)
        assert (await client.get(f"{server.url}/runs/{run_id}")).json() == show
        assert show["status"] == "finished" and {n["id"]: n["output"] for n in show["nodes"]}["prepare"] == {"n": 40}
        assert (await client.get(f"{server.url}/runs/{run_id}/frames")).json() == cli(server).json("frames", run_id)
        assert (await client.get(f"{server.url}/workflows")).json() == cli(server).json("workflows")
        ps = cli(server).json("ps")
        assert (await client.get(f"{server.url}/runs")).json() == ps
        logs = [json.loads(line) for line in cli(server)("logs", run_id, "--json").stdout.splitlines()]
        got = await client.get(f"{server.url}/runs/{run_id}/events", headers={"Accept": "application/json"})
        assert got.json() == logs


async def test_an_approve_racing_a_cli_deny_has_exactly_one_winner(server):
    """Two HTTP approves and two `smithers deny` processes at once, on three runs: one decision wins,
    every other is refused saying who decided, and the run follows the winner."""

    async def deny(run_id: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *smithers_argv(), "--db", str(server.db), "deny", run_id, "--note", "from the CLI", cwd=server.project,
            env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        return proc.returncode or 0, err.decode()

    async with httpx.AsyncClient(headers=server.auth) as client:
        for _ in range(3):
            run_id = (await client.post(f"{server.url}/runs", json={"workflow": "gated"})).json()["run_id"]
            await until_waiting(client, server, run_id)
            approve = lambda: client.post(f"{server.url}/runs/{run_id}/approve", json={"note": "from HTTP"})  # noqa
            *approves, d1, d2 = await asyncio.gather(approve(), approve(), deny(run_id), deny(run_id))
            http_wins = [r for r in approves if r.status_code == 200]
            cli_wins = [d for d in (d1, d2) if d[0] == 0]
            assert len(http_wins) + len(cli_wins) == 1, ([(r.status_code, r.text) for r in approves], d1, d2)
            winner = "approved" if http_wins else "denied"
            for r in approves:
                if r.status_code != 200:
                    assert r.status_code == 409 and f"already {winner}" in r.json()["error"], r.text
            for code, err in (d1, d2):
                if code != 0:
                    assert code == 1 and f"already {winner}" in err and err.count("\n") == 1, err
            events = [json.loads(e["data"]) async for e in sse(client, f"{server.url}/runs/{run_id}/events",
                                                                headers=server.auth)]
            assert len([e for e in events if e.get("type") == "approval_decided"]) == 1
            show = cli(server).json("show", run_id)
            (gate,) = show["approvals"]
            assert gate["decision"] == winner
            assert gate["note"] == ("from HTTP" if http_wins else "from the CLI")
            assert show["status"] == ("finished" if http_wins else "failed")


async def test_fork_rewind_replay_and_cancel_over_http(server):
    async with httpx.AsyncClient(headers=server.auth) as client:
        run_id = (await client.post(f"{server.url}/runs", json={"workflow": "steps", "input": {"rounds": 3}})
                  ).json()["run_id"]
        ends = [e async for e in sse(client, f"{server.url}/runs/{run_id}/events", headers=server.auth)
                if e.get("event") == "end"]
        assert json.loads(ends[0]["data"])["status"] == "finished"
        frames = (await client.get(f"{server.url}/runs/{run_id}/frames")).json()

        r = await client.post(f"{server.url}/runs/{run_id}/fork", json={"frame": 2, "input": {"rounds": 4},
                                                                       "run": True})
        assert r.status_code == 201, r.text
        fork = r.json()
        assert set(fork) == set(cli(server).json("fork", run_id, "--frame", "1"))  # the fork --json shape
        assert (fork["from_run"], fork["from_frame"], fork["kind"], fork["input_changed"]) == (run_id, 2, "fork", True)
        async for _ in sse(client, f"{server.url}/runs/{fork['run_id']}/events", headers=server.auth):
            pass
        forked = (await client.get(f"{server.url}/runs/{fork['run_id']}")).json()
        assert forked["status"] == "finished" and forked["input"] == {"rounds": 4}
        assert [n["output"] for n in forked["nodes"] if n["id"] == "count"] == [0, 1, 2, 3]

        r = await client.post(f"{server.url}/runs/{run_id}/replay", json={"frame": 0})
        assert r.status_code == 201 and r.json()["kind"] == "replay"
        replay_id = r.json()["run_id"]
        r = await client.post(f"{server.url}/runs/{replay_id}/cancel")
        assert r.json() == {"run_id": replay_id, "result": "cancelled"}
        assert cli(server).json("show", replay_id)["status"] == "cancelled"

        r = await client.post(f"{server.url}/runs/{run_id}/rewind", json={"frame": len(frames) - 2, "run": True})
        assert r.status_code == 201 and r.json()["kind"] == "rewind"
        async for _ in sse(client, f"{server.url}/runs/{r.json()['run_id']}/events", headers=server.auth):
            pass
        assert cli(server).json("show", run_id)["status"] == "rewound"
        assert cli(server).json("show", r.json()["run_id"])["status"] == "finished"


def runs_in_db(server: Any) -> list[str]:
    return [r["run_id"] for r in cli(server).json("ps")]


async def test_missing_or_wrong_tokens_get_401_and_write_nothing(server):
    mode = stat.S_IMODE((server.project / ".smithers" / "api-token").stat().st_mode)
    assert mode == 0o600
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.url}/healthz")).json() == {"ok": True}
        good = await client.post(f"{server.url}/runs", json={"workflow": "gated"}, headers=server.auth)
        run_id = good.json()["run_id"]
        await until_waiting(client, server, run_id)
        before = runs_in_db(server)
        frames = cli(server).json("frames", run_id)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": server.token},
                        {"Authorization": f"Basic {server.token}"}, {"Authorization": f"Bearer {server.token}x"}):
            for method, path, body in (("post", "/runs", {"workflow": "gated"}), ("get", "/runs", None),
                                       ("post", f"/runs/{run_id}/approve", {}), ("post", f"/runs/{run_id}/cancel", None),
                                       ("post", f"/runs/{run_id}/fork", {"frame": 1}), ("get", "/metrics", None),
                                       ("get", "/openapi.json", None), ("get", "/no/such/route", None)):
                r = await client.request(method, f"{server.url}{path}", json=body, headers=headers)
                assert r.status_code == 401, (headers, path, r.text)
                assert "Bearer" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
        assert runs_in_db(server) == before
        assert cli(server).json("frames", run_id) == frames
        assert cli(server).json("show", run_id)["approvals"][0]["decision"] is None


async def test_malformed_bodies_get_422_naming_the_field_and_write_nothing(server):
    async with httpx.AsyncClient(headers=server.auth) as client:
        run_id = (await client.post(f"{server.url}/runs", json={"workflow": "steps"})).json()["run_id"]
        async for _ in sse(client, f"{server.url}/runs/{run_id}/events", headers=server.auth):
            pass
        before = runs_in_db(server)
        cases = [
            ("/runs", {"input": {}}, "workflow"),
            ("/runs", {"workflow": "steps", "input": "not an object"}, "input"),
            ("/runs", {"workflow": 3}, "workflow"),
            ("/runs", {"workflow": "steps", "inptu": {}}, "inptu"),
            ("/runs", {"workflow": "steps", "input": {"rounds": "many"}}, "rounds"),
            (f"/runs/{run_id}/fork", {"frame": "abc"}, "frame"),
            (f"/runs/{run_id}/fork", {"frame": -1}, "frame"),
            (f"/runs/{run_id}/fork", {}, "frame"),
            (f"/runs/{run_id}/approve", {"iteration": "first"}, "iteration"),
        ]
        for path, body, field in cases:
            r = await client.post(f"{server.url}{path}", json=body)
            assert r.status_code == 422, (path, body, r.text)
            assert field in r.json()["error"] and "\n" not in r.json()["error"], r.json()
        r = await client.post(f"{server.url}/runs", content=b'{"workflow": "steps",', headers={
            "Content-Type": "application/json"})
        assert r.status_code == 422 and "JSON" in r.json()["error"]
        for path, body, status, words in (("/runs", {"workflow": "nope"}, 404, "unknown workflow"),
                                          ("/runs/zzzz/approve", {}, 404, "no run"),
                                          (f"/runs/{run_id}/approve", {}, 400, "no gate"),
                                          (f"/runs/{run_id}/fork", {"frame": 999}, 400, "frames 0..")):
            r = await client.post(f"{server.url}{path}", json=body)
            assert r.status_code == status and words in r.json()["error"], r.text
        assert runs_in_db(server) == before


async def test_metrics_openapi_and_workflow_authoring(server):
    async with httpx.AsyncClient(headers=server.auth) as client:
        run_id = (await client.post(f"{server.url}/runs", json={"workflow": "gated"})).json()["run_id"]
        await until_waiting(client, server, run_id)
        r = await client.get(f"{server.url}/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(r.text) for s in fam.samples}
        assert samples[("smithers_runs", (("status", "waiting"),))] == 1
        assert samples[("smithers_runs", (("status", "finished"),))] == 0
        assert samples[("smithers_waiting_gates", ())] == 1
        assert samples[("smithers_queue_depth", ())] == 0
        assert samples[("smithers_steps", (("state", "waiting_approval"),))] == 1
        assert samples[("smithers_attempts_total", (("outcome", "done"),))] == 1
        assert ("smithers_tokens_total", (("direction", "in"),)) in samples and ("smithers_cost_usd_total", ()) in samples

        spec = (await client.get(f"{server.url}/openapi.json")).json()
        routes = {(m, p) for p, ops in spec["paths"].items() for m in ops}
        assert CONTRACT_ROUTES <= routes

        source = (server.project / ".smithers" / "workflows" / "gated.py").read_text()
        broken = source.replace('Task("after", value="shipped")', 'Task("after", value=ctx.input.missing)')
        r = await client.post(f"{server.url}/workflows", json={"file": "broken", "source": broken})
        line = next(i for i, text in enumerate(broken.splitlines(), 1) if "ctx.input.missing" in text)
        assert r.status_code == 422 and f".smithers/workflows/broken.py:{line}:" in r.json()["error"], r.text
        assert not (server.project / ".smithers" / "workflows" / "broken.py").exists()
        good = source.replace("def gated(", "def gated_two(")
        r = await client.post(f"{server.url}/workflows", json={"file": "gated_two", "source": good})
        assert r.status_code == 201, r.text
        assert r.json()["workflow"] == "gated-two" and r.json()["first_steps"] == ["prepare"]
        assert "gated-two" in {w["name"] for w in (await client.get(f"{server.url}/workflows")).json()}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_a_non_loopback_bind_is_refused_in_one_line(project, host):
    done = Smithers(project, None)("serve", "--host", host, "--port", "0")
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1 and "--allow-remote" in done.stderr and host in done.stderr
    assert not (project / ".smithers" / "api-token").exists()


async def until_event(client: httpx.AsyncClient, server: Any, run_id: str, since: int, kind: str
                      ) -> list[dict[str, Any]]:
    """Follow the run's events after `since` until one of type `kind`."""
    seen = []
    async for ev in sse(client, f"{server.url}/runs/{run_id}/events?since={since}", headers=server.auth):
        seen.append(json.loads(ev["data"]))
        if seen[-1].get("type") == kind:
            return seen
    raise AssertionError(f"the stream ended before {kind}: {seen}")


async def test_signals_answers_and_choices_over_http(server):
    async with httpx.AsyncClient(headers=server.auth) as client:
        run_id = (await client.post(f"{server.url}/runs", json={"workflow": "waits"})).json()["run_id"]
        seen = await until_event(client, server, run_id, 0, "wait_started")
        bad = await client.post(f"{server.url}/runs/{run_id}/signals/ci", json={"data": {"passed": "maybe"}})
        assert bad.status_code == 400 and "passed" in bad.json()["error"]
        ok = await client.post(f"{server.url}/runs/{run_id}/signals/ci", json={"data": {"passed": True}, "by": "ci"})
        assert ok.status_code == 200, ok.text
        assert (ok.json()["name"], ok.json()["matched"]) == ("ci", True)
        seen = await until_event(client, server, run_id, seen[-1]["seq"], "approval_requested")
        bad = await client.post(f"{server.url}/runs/{run_id}/answer", json={"data": {"verdict": "good"}})
        assert bad.status_code == 400 and "score" in bad.json()["error"]
        r = await client.post(f"{server.url}/runs/{run_id}/answer", json={"data": {"verdict": "good", "score": 4}})
        assert r.status_code == 200, r.text
        seen = await until_event(client, server, run_id, seen[-1]["seq"], "approval_requested")
        bad = await client.post(f"{server.url}/runs/{run_id}/approve", json={"choice": "C"})
        assert bad.status_code == 400 and "A" in bad.json()["error"]
        r = await client.post(f"{server.url}/runs/{run_id}/approve", json={"choice": "B"})
        assert r.status_code == 200, r.text
        await until_event(client, server, run_id, seen[-1]["seq"], "run_finished")
        show = (await client.get(f"{server.url}/runs/{run_id}")).json()
        outputs = {n["id"]: n["output"] for n in show["nodes"]}
        assert outputs["ci"] == {"passed": True} and outputs["review"] == {"verdict": "good", "score": 4}
        assert outputs["end"] == "done"
        gone = await client.post(f"{server.url}/runs/{run_id}/signals/ci", json={"data": {"passed": True}})
        assert gone.status_code == 400 and "finished" in gone.json()["error"]


async def test_with_a_worker_up_runs_started_over_http_go_to_the_worker_and_outlive_the_server(server):
    """`smithers up`'s case: the API queues the run for the worker instead of hosting it, leaves an
    approval to the worker, and the run ends although the server that started it is gone."""
    from tests.support import WorkerProc

    worker = WorkerProc(cli(server), env=clean_env())
    try:
        async with httpx.AsyncClient(headers=server.auth) as client:
            r = await client.post(f"{server.url}/runs", json={"workflow": "gated", "input": {"n": 1}})
            assert r.status_code == 201, r.text
            assert r.json()["hosted"] == "worker" and r.json()["workers"] == 1
            run_id = r.json()["run_id"]
            await until_waiting(client, server, run_id)
            r = await client.post(f"{server.url}/runs/{run_id}/approve", json={})
            assert r.status_code == 200, r.text
        server.proc.send_signal(signal.SIGINT)  # the agent's session ends: the server with it
        server.proc.wait(timeout=60)
        follow = cli(server)("logs", run_id, "--follow", "--json")  # returns when the run ends
        assert json.loads(follow.stdout.splitlines()[-1])["type"] == "run_finished", follow.stdout[-500:]
        assert cli(server).json("show", run_id)["status"] == "finished"
        assert any(run_id in ln for ln in worker.lines), worker.lines[-5:]
    finally:
        assert worker.stop() == 0
