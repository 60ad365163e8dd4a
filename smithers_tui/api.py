"""`smithers serve`: the HTTP API (FastAPI on uvicorn) — the same operations as the MCP tools,
each route one line over `Operations`, JSON bodies equal to the CLI's `--json` shapes, an OpenAPI
schema at /openapi.json, live server-sent events at GET /runs/{id}/events?since=SEQ, Prometheus
text at /metrics.

Every request needs `Authorization: Bearer <token>` (the token is made on first start into
`.smithers/api-token`, mode 0600); without it: 401, before any route runs, so nothing is read or
written. Only /healthz is open. Binding beyond loopback needs --allow-remote.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from engine.errors import (ApprovalConflict, BadInput, Conflict, InputInvalid, LeaseHeld, RunNotFound, SmithersError,
                           SourceChanged, WorkflowInvalid, WorkflowNotFound)
from engine.metrics import Metrics

from .operations import Operations

log = logging.getLogger("smithers.api")
TOKEN_FILE = "api-token"
OPEN_PATHS = frozenset({"/healthz"})


# --- request bodies (unknown fields are refused, naming them) ------------------------------------
class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartBody(Body):
    workflow: str = Field(description="a workflow name (GET /workflows) or path/to/file.py[:name]")
    input: dict[str, Any] | None = Field(None, description="the input, matching the workflow's input schema")
    agent: str | None = Field(None, description="run every agent step with this agent, e.g. \"demo\"")


class DecideBody(Body):
    node: str | None = Field(None, description="the gate's step id; leave out when exactly one waits")
    iteration: int | None = Field(None, description="the gate's loop iteration")
    note: str | None = Field(None, description="a note kept with the decision")
    by: str | None = Field(None, description="who decides (default: the server's user)")


class ChoiceBody(DecideBody):
    choice: str | None = Field(None, description="a select gate: the option chosen")
    rank: list[str] | None = Field(None, description="a rank gate: every option, best first")


class AnswerBody(Body):
    data: Any = Field(description="the answer, fitting the human task's output model")
    node: str | None = Field(None, description="the human task's step id; leave out when exactly one waits")
    iteration: int | None = Field(None, description="its loop iteration")
    note: str | None = Field(None, description="a note kept with the answer")
    by: str | None = Field(None, description="who answers (default: the server's user)")


class SignalBody(Body):
    data: Any = Field(None, description="the payload, fitting the Signal step's output model")
    by: str | None = Field(None, description="who sends it")


class ResumeBody(Body):
    force: bool = False
    accept_changes: bool = False


class ForkBody(Body):
    frame: int = Field(ge=0, description="the frame to fork from")
    input: dict[str, Any] | None = Field(None, description="input changes, merged into the run's input")
    reset: list[str] = Field(default_factory=list, description="step ids to run again")
    run: bool = Field(False, description="start the new run at once")


class RewindBody(Body):
    frame: int = Field(ge=0)
    run: bool = False


class ReplayBody(Body):
    frame: int = Field(0, ge=0)
    run: bool = False


class ValidateBody(Body):
    source: str
    sample_input: dict[str, Any] | None = None
    file: str | None = None


class WriteBody(Body):
    file: str = Field(description="file name under .smithers/workflows/, e.g. \"fix_tests\"")
    source: str
    sample_input: dict[str, Any] | None = None
    overwrite: bool = False


# --- the app -------------------------------------------------------------------------------------
def create_app(ops: Operations, token: str) -> FastAPI:
    app = FastAPI(title="Smithers", version=_version(),
                  description="Durable workflows for AI agents. Every route but /healthz needs "
                              "`Authorization: Bearer <token>` (.smithers/api-token).")
    app.add_middleware(BearerAuth, token=token)
    _errors(app)

    @app.get("/healthz", tags=["server"])
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/metrics", tags=["server"], response_class=Response)
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(prometheus_text(await ops.engine.metrics()), media_type=CONTENT_TYPE_LATEST)

    # workflows
    @app.get("/workflows", tags=["workflows"])
    async def list_workflows() -> list[dict[str, Any]]:
        return await ops.list_workflows()

    @app.get("/workflows/{name}", tags=["workflows"])
    async def describe_workflow(name: str) -> dict[str, Any]:
        return await ops.describe_workflow(name)

    @app.post("/workflows/validate", tags=["workflows"])
    async def validate_workflow(body: ValidateBody) -> dict[str, Any]:
        return await ops.validate_workflow(body.source, body.sample_input, body.file)

    @app.post("/workflows", tags=["workflows"], status_code=201)
    async def write_workflow(body: WriteBody) -> dict[str, Any]:
        return await ops.write_workflow(body.file, body.source, body.sample_input, body.overwrite)

    # runs
    @app.post("/runs", tags=["runs"], status_code=201)
    async def start_run(body: StartBody) -> dict[str, Any]:
        return await ops.start_run(body.workflow, body.input, body.agent)

    @app.get("/runs", tags=["runs"])
    async def list_runs(status: str | None = None) -> list[dict[str, Any]]:
        return await ops.list_runs(status)

    @app.get("/runs/{run_id}", tags=["runs"])
    async def get_run(run_id: str, frame: int | None = Query(None, ge=0)) -> dict[str, Any]:
        return await ops.get_run(run_id, frame)

    @app.get("/runs/{run_id}/frames", tags=["runs"])
    async def list_frames(run_id: str, since: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        return await ops.list_frames(run_id, since)

    @app.get("/runs/{run_id}/events", tags=["runs"],
             responses={200: {"content": {"text/event-stream": {}, "application/json": {}},
                              "description": "server-sent events (each `id:` is the event's seq; `data:` the "
                                             "event as `smithers logs --json` prints it; a last `event: end` "
                                             "when the run has ended), or a JSON list with Accept: "
                                             "application/json"}})
    async def events(request: Request, run_id: str, since: int = Query(0, ge=0),
                     last_event_id: str | None = Header(None)) -> Any:
        rid = await ops.find_run(run_id)
        if last_event_id and last_event_id.isdigit():
            since = max(since, int(last_event_id))
        accept = request.headers.get("accept", "")
        if "application/json" in accept and "text/event-stream" not in accept:
            return (await ops.get_events(rid, since, 0, 1000))["events"]
        return EventSourceResponse(_sse(ops, rid, since), ping=15)

    @app.post("/runs/{run_id}/approve", tags=["decisions"])
    async def approve(run_id: str, body: ChoiceBody | None = None) -> dict[str, Any]:
        b = body or ChoiceBody()
        return await ops.decide(run_id, True, b.node, b.iteration, b.note, b.by, b.choice, b.rank)

    @app.post("/runs/{run_id}/answer", tags=["decisions"])
    async def answer(run_id: str, body: AnswerBody) -> dict[str, Any]:
        return await ops.answer(run_id, body.data, body.node, body.iteration, body.note, body.by)

    @app.post("/runs/{run_id}/signals/{name}", tags=["decisions"])
    async def signal(run_id: str, name: str, body: SignalBody | None = None) -> dict[str, Any]:
        b = body or SignalBody()
        return await ops.signal(run_id, name, b.data, b.by)

    @app.post("/runs/{run_id}/deny", tags=["decisions"])
    async def deny(run_id: str, body: DecideBody | None = None) -> dict[str, Any]:
        b = body or DecideBody()
        return await ops.decide(run_id, False, b.node, b.iteration, b.note, b.by)

    @app.post("/runs/{run_id}/cancel", tags=["runs"])
    async def cancel(run_id: str) -> dict[str, Any]:
        return await ops.cancel(run_id)

    @app.post("/runs/{run_id}/resume", tags=["runs"])
    async def resume(run_id: str, body: ResumeBody | None = None) -> dict[str, Any]:
        b = body or ResumeBody()
        return await ops.resume(run_id, b.force, b.accept_changes)

    @app.post("/runs/{run_id}/fork", tags=["time travel"], status_code=201)
    async def fork(run_id: str, body: ForkBody) -> dict[str, Any]:
        return await ops.fork(run_id, body.frame, body.input, body.reset, body.run)

    @app.post("/runs/{run_id}/rewind", tags=["time travel"], status_code=201)
    async def rewind(run_id: str, body: RewindBody) -> dict[str, Any]:
        return await ops.rewind(run_id, body.frame, body.run)

    @app.post("/runs/{run_id}/replay", tags=["time travel"], status_code=201)
    async def replay(run_id: str, body: ReplayBody | None = None) -> dict[str, Any]:
        b = body or ReplayBody()
        return await ops.replay(run_id, b.frame, b.run)

    @app.get("/runs/{run_id}/diff", tags=["runs"])
    async def diff(run_id: str, node: str, iteration: int | None = Query(None, ge=0)) -> dict[str, Any]:
        return await ops.diff(run_id, node, iteration)

    return app


async def _sse(ops: Operations, run_id: str, since: int) -> AsyncIterator[ServerSentEvent]:
    """Every stored event after `since`, then new ones as they are written, until the run ends."""
    async for ev in ops.engine.follow(run_id, since):
        yield ServerSentEvent(data=ev.model_dump_json(), id=str(ev.seq))
    report = await ops.engine.report(run_id)
    yield ServerSentEvent(event="end", data=json.dumps({"run_id": run_id, "status": report.status}))


# --- errors: one line each, never a traceback -----------------------------------------------------
STATUS: list[tuple[type[Exception], int]] = [
    (RunNotFound, 404), (WorkflowNotFound, 404), (InputInvalid, 422), (WorkflowInvalid, 422),
    (ApprovalConflict, 409), (LeaseHeld, 409), (SourceChanged, 409), (Conflict, 409), (BadInput, 400),
]


def _errors(app: FastAPI) -> None:
    @app.exception_handler(SmithersError)
    async def smithers_error(request: Request, e: SmithersError) -> JSONResponse:
        status = next((code for t, code in STATUS if isinstance(e, t)), 500)
        return JSONResponse({"error": str(e)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        lines = [f"{_field(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in errors[:3]]
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return JSONResponse({"error": "; ".join(lines) + more, "detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return JSONResponse({"error": f"internal error: {type(e).__name__}{': ' + text if text else ''}"},
                            status_code=500)


def _field(loc: Any) -> str:
    """A validation error's location as the caller wrote it: `workflow`, `input.goal`, `query.since`."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"]:
        parts = parts[1:] if len(parts) > 1 and not parts[1].isdigit() else ["body"]
    return ".".join(parts) or "body"


# --- authentication ------------------------------------------------------------------------------
class BearerAuth:
    """401 for every request without `Authorization: Bearer <token>`, before routing (so an unknown
    path or a bad body says nothing either); /healthz is open."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not secrets.compare_digest(value.strip(), self.token):
                why = "wrong token" if given else "no token"
                body = json.dumps({"error": f"unauthorized ({why}): send Authorization: Bearer <the token in "
                                            ".smithers/api-token>"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def api_token(project: Path) -> tuple[str, bool]:
    """The API token of a project (`.smithers/api-token`, mode 0600), made on first start: (token, new)."""
    from engine.project import smithers_dir

    path = smithers_dir(project) / TOKEN_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # a token others can read is no secret: tighten it
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise BadInput(f"{path} is empty: delete it and start again to make a new token") from None
        return token, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


# --- metrics -------------------------------------------------------------------------------------
def prometheus_text(m: Metrics) -> bytes:
    """The metrics in Prometheus' text format, through prometheus_client (a registry per scrape:
    every figure is read from the database, so it is the same whichever process serves it)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Snapshot:
        def collect(self) -> Any:
            runs = GaugeMetricFamily("smithers_runs", "Runs by status", labels=["status"])
            for status, n in sorted(m.runs.items()):
                runs.add_metric([status], n)
            yield runs
            steps = GaugeMetricFamily("smithers_steps", "Steps (tasks and gates) by state", labels=["state"])
            for state, n in sorted(m.steps.items()):
                steps.add_metric([state], n)
            yield steps
            attempts = CounterMetricFamily("smithers_attempts", "Attempts of steps by outcome", labels=["outcome"])
            for outcome, n in sorted(m.attempts.items()):
                attempts.add_metric([outcome], n)
            yield attempts
            tokens = CounterMetricFamily("smithers_tokens", "Model tokens used", labels=["direction"])
            tokens.add_metric(["in"], m.tokens_in)
            tokens.add_metric(["out"], m.tokens_out)
            yield tokens
            yield CounterMetricFamily("smithers_cost_usd", "Model cost in US dollars", value=m.cost_usd)
            yield GaugeMetricFamily("smithers_queue_depth", "Runs queued for a worker", value=m.queue_depth)
            yield GaugeMetricFamily("smithers_waiting_gates", "Gates waiting for a decision", value=m.waiting_gates)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


# --- serving -------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool, what: str = "the API") -> None:
    if not allow_remote and not is_loopback(host):
        raise BadInput(f"--host {host} is not a loopback address: {what} would be reachable from other machines; "
                       "pass --allow-remote to do that on purpose")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), or one line saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BadInput(f"--host {host}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror}: choose another --port") from None
    return sock


async def serve(db: str, host: str, port: int, allow_remote: bool = False, project: Path | None = None) -> int:
    """Serve until SIGINT/SIGTERM; runs hosted here are then stopped, left resumable."""
    import uvicorn

    from engine.project import durability
    from engine.runtime import Engine
    from engine.store import open_store

    project = (project or Path.cwd()).resolve()
    check_bind(host, allow_remote)
    token, new = api_token(project)
    sock = bind(host, port)
    logging.basicConfig(level=logging.WARNING, format="smithers serve: %(message)s")
    async with await open_store(db, create=True, durability=durability()) as store:
        engine = Engine(store)
        app = create_app(Operations(engine, project), token)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                               timeout_graceful_shutdown=5))
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        print(f"smithers: API on http://{shown}:{bound[1]} (token {'made in' if new else 'in'} "
              f"{project / '.smithers' / TOKEN_FILE}; OpenAPI at /openapi.json)", flush=True)
        try:
            await server.serve(sockets=[sock])
        finally:
            await engine.close()
    return 0


def _version() -> str:
    from .mcp_server import _version as v

    return v()

