"""`folio serve`: every trained model behind one HTTP API (FastAPI) and a web page.

    folio serve --model runs/lm --model runs/imdb --model runs/bible --port 8000

Each registered task (`folio.tasks.TASKS`) adds its own routes from its `serve.py`: `POST /v1/generate`
(lm: server-sent events), `POST /v1/classify`, `POST /v1/translate`, `POST /v1/caption`. Here: the models,
`GET /v1/models` (OpenAI's list shape), `GET /healthz`, the OpenAPI schema at `/openapi.json`, the page at `/`, and
the body limit. What the task routes build on (`ServedModel`, `Pick`, `ERRORS`, `Batcher`) is published in
`folio.serve.api`, which tasks import (never this module, which imports them). OpenAI-compatible routes
(`/v1/completions`, `/v1/chat/completions`, `/v1/embeddings`) come from the tasks too, on the protocol module
`folio.serve.openai`, which also gives errors on OpenAI's paths OpenAI's shape.

The event loop only moves bytes: decoding images, tokenizing and model work run in worker threads
(`asyncio.to_thread`, `Batcher`, and for generation `folio.tasks.lm.batching`). Classification requests that arrive together are
merged into one batch (`Batcher`); each model runs one batch at a time, and waiting requests are served in
arrival order (asyncio locks are FIFO).

Bad input never gets a 5xx: every request field is checked where it enters (`folio.serve.schemas`), a bad one
gets a 422 whose one-line `detail` names it, and anything unexpected is caught in one place (`Guard`): a 500
with a one-line body, the traceback in the server's log only, and the client's connection still usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from folio.errors import CheckpointError, FolioError
from folio.nn import kernels
from folio.serve.api import ServedModel
from folio.serve.openai import MODELS, OPENAI_ERRORS, OpenAIError, is_openai_path
from folio.serve.page import build_page, registered_tabs
from folio.tasks import TASKS, task_of
from folio.version import __version__

MAX_BODY_BYTES = 1 << 20  # 1 MiB per request body
log = logging.getLogger("folio.serve")


# `GET /v1/models`: OpenAI's list shape, with Folio's own fields (the host's alone: no task route answers it).
class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    task: str = Field(description="Folio's task: lm, classify, translate, caption, embed")
    directory: str
    model: dict = Field(description="the model section of its config.json")
    labels: list[str] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def load_model(spec: str, dtype: str = "auto") -> ServedModel:
    """`DIR` or `NAME=DIR` → the model, loaded by the task its config.json names (`dtype`: `folio serve --dtype`)."""
    name, _, directory = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(directory)
    task = task_of(path)
    if task.routes is None:
        raise CheckpointError(f"{path}/config.json: task {task.name!r} cannot be served")
    return ServedModel(name or path.resolve().name, task.name, str(path), task.load(path, dtype=dtype))


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any model sees it.

    A declared Content-Length is checked at once; a chunked body is read up to the limit and then
    handed on whole.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = {"detail": f"request body is over the {self.limit:,}-byte limit"}
        if is_openai_path(scope.get("path", "")):
            too_large = OpenAIError(413, too_large["detail"]).body()
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                return await _send_json(send, 413, too_large)
            return await self.app(scope, receive, send)
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _send_json(send, 413, too_large)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


class Guard:
    """ASGI middleware, outermost: an exception no handler took gets a 500 with a one-line JSON body (when no
    answer was started), its traceback goes to the server's log only, and the connection stays open for the
    client's next request (uvicorn closes a connection whose application raised)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:  # noqa: BLE001 (logged whole; the client gets one line)
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, INTERNAL_ERROR)


INTERNAL_ERROR = {"detail": "internal error while answering this request (the server's log has the details)"}


def _one_line(errors: list[dict]) -> tuple[str, list[dict]]:
    """Pydantic's errors as one line naming each field ("temperature: Input should be a finite number") and
    as entries without the rejected values (which may be NaN, a 10,000-digit number or a lone surrogate:
    values a JSON answer cannot always carry, and that the client sent anyway)."""
    entries, parts = [], []
    for error in errors:
        loc = [part if isinstance(part, int) else _printable(str(part))[:100] for part in error.get("loc", ())]
        msg = _printable(str(error.get("msg", "invalid")))
        entries.append({"loc": loc, "msg": msg, "type": str(error.get("type", "value_error"))})
        # ["body", "texts", 0] → texts[0]; a body that is not JSON (or not an object) → the body
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:]).lstrip(".")
        if error.get("type") == "json_invalid":
            where, msg = "the body", f"not valid JSON ({_printable(str((error.get('ctx') or {}).get('error', msg)))})"
        parts.append(f"{where or 'the body'}: {msg}")
    return "; ".join(parts), entries


def _printable(text: str) -> str:
    """The text on one line, with anything UTF-8 cannot encode escaped."""
    return " ".join(text.encode("utf-8", "backslashreplace").decode("utf-8").split())


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _param(loc: tuple) -> str | None:
    """A validation error's location → OpenAI's `param`: the request field (`messages[0].content`), without
    FastAPI's leading "body" and Pydantic's union-member names ("str", "list[str]")."""
    parts = [p for p in loc[1:] if isinstance(p, int) or (p.isidentifier() and p not in ("str", "int", "float"))]
    if not parts or isinstance(parts[0], int):
        return None  # the body itself (not JSON, or not an object)
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(parts))


def _validation_error(err: RequestValidationError) -> OpenAIError:
    errors = err.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    param = _param(tuple(first["loc"]))
    message = "; ".join(f"{_param(tuple(e['loc'])) or 'body'}: {e['msg']}" for e in errors[:4]) or first["msg"]
    if first.get("type") == "json_invalid":
        message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    return OpenAIError(400, message, param)


def install_error_handlers(app: FastAPI) -> None:
    """Answer errors on OpenAI's paths in OpenAI's shape; every other path keeps the handler it had (Folio's
    `{"detail": ...}`). Call after the app's own handlers are installed."""

    def scoped(kind: type[Exception], fallback, to_openai: Callable[[Any], OpenAIError]):
        previous = app.exception_handlers.get(kind, fallback)

        async def handle(request: Request, err):
            if not is_openai_path(request.url.path):
                return await previous(request, err)
            error = to_openai(err)
            return JSONResponse(error.body(), status_code=error.status)

        app.add_exception_handler(kind, handle)

    scoped(RequestValidationError, request_validation_exception_handler, _validation_error)
    scoped(StarletteHTTPException, http_exception_handler, lambda err: OpenAIError(
        err.status_code, str(err.detail), code="model_not_found" if err.status_code == 404 else None,
        type="invalid_request_error" if err.status_code < 500 else "server_error"))
    scoped(FolioError, None, lambda err: OpenAIError(400, str(err)))  # bad input the model itself found

    async def openai_error(request: Request, err: OpenAIError):
        return JSONResponse(err.body(), status_code=err.status)

    app.add_exception_handler(OpenAIError, openai_error)


def create_app(specs: list[str], max_body_bytes: int = MAX_BODY_BYTES, shutdown: threading.Event | None = None,
               dtype: str = "auto") -> FolioApp:
    """The FastAPI application serving the models in `specs` (`DIR` or `NAME=DIR` each).

    `shutdown`, once set, tells long work in flight (generation streams) to end at its next step.
    """
    models: dict[str, ServedModel] = {}
    for spec in specs:
        served = load_model(spec, dtype)
        if served.name in models:
            raise CheckpointError(f"two models are named {served.name!r}: name them with --model NAME=DIR")
        models[served.name] = served
    if not models:
        raise CheckpointError("no model to serve: give at least one --model DIR")
    # the models run in other threads from here on: the loading thread's OpenMP workers, left idle, would slow
    # their parallel work (see `release_workers`)
    kernels.release_workers()

    app = FolioApp(max_body_bytes, title="Folio", version=__version__, lifespan=_worker_threads,
                   description="Text generation, classification, translation and image captioning with Folio's models.")

    def pick(name: str | None, task: str) -> ServedModel:
        if name is None:
            candidates = [m for m in models.values() if m.task == task]
            if not candidates:
                raise HTTPException(404, f"no {task} model is being served")
            return candidates[0]
        if name not in models:
            raise HTTPException(404, f"unknown model {name!r} (served: {', '.join(models)})")
        if models[name].task != task:
            raise HTTPException(422, f"model {name!r} is a {models[name].task} model, not {task}")
        return models[name]

    @app.exception_handler(FolioError)
    async def folio_error(request: Request, err: FolioError):  # bad input the model itself found
        return JSONResponse(status_code=422, content={"detail": _printable(str(err))})

    @app.exception_handler(RequestValidationError)
    async def invalid_field(request: Request, err: RequestValidationError):
        detail, errors = _one_line(list(err.errors()))
        return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})

    @app.exception_handler(Exception)  # answered by Starlette's outermost layer, which re-raises it to `Guard`
    async def internal_error(request: Request, err: Exception):
        return JSONResponse(status_code=500, content=INTERNAL_ERROR)

    install_error_handlers(app)  # after Folio's own: they answer on every path but OpenAI's

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "models": len(models)}

    @app.get(MODELS, response_model=ModelList)
    async def list_models() -> dict:
        return {"object": "list", "data": [m.info() for m in models.values()]}

    @app.get(MODELS + "/{model_id:path}", response_model=ModelCard, responses={404: OPENAI_ERRORS[404]})
    async def retrieve_model(model_id: str) -> dict:
        if model_id not in models:
            raise OpenAIError(404, f"unknown model {model_id!r} (served: {', '.join(models)})", "model", "model_not_found")
        return models[model_id].info()

    html = build_page(registered_tabs())

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return html

    for task in TASKS.values():  # every task's routes, whether or not a model of it is served (then: 404)
        if task.routes is not None:
            task.hook("routes")(app, lambda name, task=task.name: pick(name, task))

    app.state.models = models
    app.state.shutdown = shutdown or threading.Event()
    return app


@contextlib.asynccontextmanager
async def _worker_threads(app: FastAPI):
    """For the server's life, the event loop's worker threads (`asyncio.to_thread`: the requests' model work) are
    `WorkerThreads`."""
    asyncio.get_running_loop().set_default_executor(WorkerThreads(thread_name_prefix="folio-worker"))
    yield


class WorkerThreads(ThreadPoolExecutor):
    """A thread pool whose threads let their OpenMP workers go after each job (`kernels.release_workers`): a
    thread that ran a classifier keeps waiting for the next job, and its idle workers would slow the parallel
    work of every other thread, a language model's batcher among them."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_then_release_workers, fn, *args, **kwargs)


def _then_release_workers(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        kernels.release_workers()


class FolioApp(FastAPI):
    """FastAPI with Folio's two outer layers around its own: `Guard`, then `BodyLimit` (0: no limit)."""

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES, **kwargs):
        self.max_body_bytes = max_body_bytes
        super().__init__(**kwargs)

    def build_middleware_stack(self):
        stack = super().build_middleware_stack()
        return Guard(BodyLimit(stack, self.max_body_bytes) if self.max_body_bytes else stack)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling the app when a stop signal arrives (`shutdown`), and exiting 0 after a
    graceful stop (uvicorn itself re-raises the signal once shut down, so the process would end killed by it)."""

    def __init__(self, config: uvicorn.Config, shutdown: threading.Event):
        super().__init__(config)
        self.shutdown_event = shutdown

    def handle_exit(self, sig: int, frame) -> None:
        self.shutdown_event.set()  # generation threads read it before their next step
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(specs: list[str], host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int = MAX_BODY_BYTES,
          dtype: str = "auto") -> None:
    """Run the server until Ctrl-C / SIGTERM, then stop gracefully: no new connections, every generation in
    flight ends at its next step with a final `done` event (`"reason": "shutdown"`), other requests finish,
    and the process exits 0, well within uvicorn's grace period (5 s)."""
    shutdown = threading.Event()
    config = uvicorn.Config(create_app(specs, max_body_bytes, shutdown, dtype), host=host, port=port, log_level="info",
                            timeout_graceful_shutdown=5)
    GracefulServer(config, shutdown).run()
