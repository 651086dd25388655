"""``search serve``: the FastAPI app over the study storage and the job queue (the only module that imports FastAPI)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from diffsearch.errors import DiffsearchError

try:
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
except ImportError:  # pragma: no cover - depends on the installed extras
    raise DiffsearchError("search serve needs FastAPI and uvicorn: pip install 'diffsearch[service]'") from None
from diffsearch.search import storage
from diffsearch.search.config import validate_study_name
from diffsearch.service import jobs, plots
from diffsearch.service.dispatcher import Dispatcher
from diffsearch.service.launchers import LAUNCHERS
from diffsearch.service.plots import PLOTS


class ServiceSettings(BaseModel):
    """How ``search serve`` runs: where it listens, which storage it serves, where jobs run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs DIFFSEARCH_TOKEN")
    port: int = Field(8600, ge=0, le=65535)
    storage: str = Field("sqlite:///runs/service.db", description="Optuna storage URL holding every study and its job")
    runs_dir: str = Field("runs", description="folder of artifacts (runs/<study>/best.json) and worker logs")
    ray_address: str | None = Field(None, description="run jobs as Ray Jobs on this cluster's job API (http://head:8265)")
    workers: int = Field(1, ge=1, description="jobs running at once")
    token: str | None = Field(None, description="bearer token required to submit and cancel (DIFFSEARCH_TOKEN)")
    private_reads: bool = Field(False, description="require the token for reads too")
    max_body_bytes: int = Field(65536, ge=1024, description="largest request body accepted")
    poll_s: float = Field(0.5, gt=0, description="how often the queue and the event streams look at the storage")
    events_max_s: float = Field(3600.0, gt=0, description="an event stream closes after this long (clients reconnect)")


def absolute_storage(url: str) -> str:
    """Relative SQLite/journal paths made absolute (workers and Ray jobs run elsewhere)."""
    path = storage.storage_file(url)
    return url if path is None or path.is_absolute() else url.replace(str(path), str(path.resolve()), 1)


def check_exposure(settings: ServiceSettings) -> None:
    """Refuse to listen beyond loopback without a token."""
    host = "127.0.0.1" if settings.host == "localhost" else settings.host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.token:
        raise DiffsearchError(f"--host {settings.host} exposes the service beyond this machine: set DIFFSEARCH_TOKEN first")


class TTLCache:
    """Stale-while-revalidate: one thread recomputes a value at most every ``ttl`` s, the others get the previous one."""

    def __init__(self, ttl: float) -> None:
        self.ttl, self.lock, self.values, self.computing = ttl, threading.Lock(), {}, {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        with self.lock:
            entry, running = self.values.get(key), self.computing.get(key)
            if entry is not None and (running is not None or time.monotonic() - entry[0] <= self.ttl):
                return entry[1]
            if running is None:
                self.computing[key] = threading.Event()
        if running is not None:  # first computation of this key under way: wait for it, then ask again
            running.wait(60)
            return self.get(key, compute)
        try:
            value = compute()
            with self.lock:
                self.values[key] = (time.monotonic(), value)
            return value
        finally:
            with self.lock:
                self.computing.pop(key).set()


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 (by header or while streaming)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and int(length) > self.limit:
            return await _plain(send, 413, f"request body over {self.limit} bytes")
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, bounded, send)


async def _plain(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class Service:
    """The server's state: one shared storage, the dispatcher and the read cache."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.storage_url = absolute_storage(settings.storage)
        self.runs_dir = Path(settings.runs_dir).resolve()
        self.shared = storage.shared_storage(self.storage_url)
        launcher = LAUNCHERS.get("ray" if settings.ray_address else "local")
        self.dispatcher = Dispatcher(self.shared, launcher(self.storage_url, self.runs_dir / "logs", settings.ray_address),
                                     settings.workers, settings.poll_s)
        self.cache = TTLCache(min(settings.poll_s, 0.5))
        self.settled: dict[str, tuple[str, dict[str, Any]]] = {}

    def study(self, name: str):
        validate_study_name(name)
        try:
            return storage.load_from(self.shared, name)
        except DiffsearchError as error:
            raise NotFound(str(error)) from None

    def studies(self) -> list[dict[str, Any]]:
        return self.cache.get("", lambda: [self._summary(name) for name in storage.study_names(self.shared)])

    def _summary(self, name: str) -> dict[str, Any]:
        """A study's summary; a finished, failed or cancelled job's is kept until its job record changes."""
        study = storage.load_from(self.shared, name)
        attrs = study.user_attrs
        key = json.dumps([attrs.get(jobs.JOB_KEY), bool(attrs.get("final"))], sort_keys=True)
        if name in self.settled and self.settled[name][0] == key:
            return self.settled[name][1]
        summary = jobs.summary(study)
        if summary["status"] in jobs.TERMINAL and attrs.get(jobs.JOB_KEY):
            self.settled[name] = (key, summary)
        return summary

    def detail(self, name: str) -> dict[str, Any]:
        return self.cache.get(f"detail:{name}", lambda: jobs.detail(self.study(name)))

    def summary(self, name: str) -> dict[str, Any]:
        return self.cache.get(f"summary:{name}", lambda: jobs.summary(self.study(name)))


class NotFound(DiffsearchError):
    """No such study, artifact or plot."""


class BodyTooLarge(DiffsearchError):
    """A request body over ``max_body_bytes`` (streamed without a Content-Length)."""


def create_app(settings: ServiceSettings):
    """The FastAPI app (routes in ``_routes``); the dispatcher runs while the app does."""

    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app):
        service.dispatcher.start()
        yield
        service.dispatcher.stop()

    app = FastAPI(title="diffsearch", version="1", lifespan=lifespan,
                  description="Submit, watch and fetch diffsearch searches (Optuna studies) over HTTP.")
    app.state.service = service
    statuses = ((jobs.JobConflict, 409), (NotFound, 404), (BodyTooLarge, 413), (DiffsearchError, 422))
    for kind, status in statuses:
        app.add_exception_handler(kind, lambda request, error, status=status: JSONResponse({"detail": str(error)}, status))
    _routes(app, service)
    return BodyLimit(app, settings.max_body_bytes)


def _authorize(service: Service, request, write: bool) -> None:

    token = service.settings.token
    if not token or not (write or service.settings.private_reads):
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or request.query_params.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "a valid 'Authorization: Bearer <token>' header is required", {"WWW-Authenticate": "Bearer"})


def _routes(app, service: Service) -> None:
    """The REST API, the event stream and the page."""

    def read(request: Request) -> None:
        _authorize(service, request, write=False)

    def write(request: Request) -> None:
        _authorize(service, request, write=True)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("diffsearch.service").joinpath("page.html").read_text()

    @app.get("/studies", dependencies=[Depends(read)], summary="every study with status and progress")
    def list_studies() -> list[dict[str, Any]]:
        return service.studies()

    @app.post("/studies", status_code=201, dependencies=[Depends(write)], summary="submit a run config (YAML keys) as a job")
    async def submit(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as error:
            raise DiffsearchError(f"body: not JSON ({error})") from None
        config = jobs.service_config(body, service.storage_url, service.runs_dir)
        await run_in_threadpool(jobs.submit, service.shared, config)
        return await run_in_threadpool(jobs.summary, service.study(config.study_name()))

    @app.get("/studies/{name}", dependencies=[Depends(read)], summary="top candidates, cost breakdown, Pareto front")
    def study_detail(name: str) -> dict[str, Any]:
        return service.detail(name)

    @app.get("/studies/{name}/artifact", dependencies=[Depends(read)], summary="the exported JSON artifact")
    def artifact(name: str):
        job = jobs.read_job(service.study(name))
        if job is None or not job.artifact or not Path(job.artifact).is_file():
            raise NotFound(f"study {name!r} has no artifact yet (status {job.status if job else 'not a job'})")
        return FileResponse(job.artifact, media_type="application/json", filename=f"{name}.json")

    @app.get("/studies/{name}/plots/{kind}.png", dependencies=[Depends(read)], summary="best_so_far or pareto plot")
    def plot(name: str, kind: str) -> Response:
        if kind not in PLOTS:
            raise NotFound(f"unknown plot {kind!r}; valid plots: {', '.join(PLOTS.names())}")
        return Response(plots.render(kind, service.detail(name)), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/studies/{name}/cancel", dependencies=[Depends(write)], summary="cancel a queued or running job")
    def cancel(name: str) -> dict[str, Any]:
        study = service.study(name)
        job = jobs.read_job(study)
        if job is None or job.status not in jobs.ACTIVE:
            raise jobs.JobConflict(f"study {name!r} is not queued or running (status {job.status if job else 'not a job'})")
        service.dispatcher.cancel(study)
        return jobs.summary(study)

    @app.get("/studies/{name}/events", dependencies=[Depends(read)], summary="progress as server-sent events")
    def events(name: str, request: Request) -> StreamingResponse:
        service.study(name)
        return StreamingResponse(_event_stream(service, name, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})


async def _event_stream(service: Service, name: str, request):
    """``progress`` events (the study's summary) whenever it changes, ``end`` once it is finished, failed or cancelled."""

    last, deadline = None, time.monotonic() + service.settings.events_max_s
    while time.monotonic() < deadline and not await request.is_disconnected():
        summary = await run_in_threadpool(service.summary, name)
        if summary != last:
            yield f"event: progress\ndata: {json.dumps(summary)}\n\n"
            last = summary
        if summary["status"] in jobs.TERMINAL:
            yield "event: end\ndata: {}\n\n"
            return
        await asyncio.sleep(service.settings.poll_s)


def serve(settings: ServiceSettings) -> None:
    """Check the settings, then run the app under uvicorn until interrupted."""
    import uvicorn

    check_exposure(settings)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
