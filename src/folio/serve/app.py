"""`folio serve`: every trained model behind one HTTP API (FastAPI) and a web page.

    folio serve --model runs/lm --model runs/imdb --model runs/bible --port 8000

Each registered task (`folio.tasks.TASKS`) adds its own routes from its `serve.py`: `POST /v1/generate`
(lm: server-sent events), `POST /v1/classify`, `POST /v1/translate`, `POST /v1/caption`. Here: the models,
`GET /v1/models` (OpenAI's list shape), `GET /healthz`, the OpenAPI schema at `/openapi.json`, the page at `/`, and
what the task routes share (`ServedModel`, `pick`, `ERRORS`, `Batcher`, the body limit). OpenAI-compatible
routes (`/v1/completions`, `/v1/chat/completions`, `/v1/embeddings`) come from the tasks too, on the protocol
module `folio.serve.openai`, which also gives errors on OpenAI's paths OpenAI's shape.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from folio.errors import CheckpointError, FolioError
from folio.serve.openai import (
    MODELS,
    OPENAI_ERRORS,
    ModelCard,
    ModelList,
    OpenAIError,
    install_error_handlers,
    is_openai_path,
)
from folio.serve.page import PAGE
from folio.serve.schemas import ErrorResponse
from folio.tasks import TASKS, task_of

MAX_BODY_BYTES = 1 << 20  # 1 MiB per request body
log = logging.getLogger("folio.serve")

# What the model routes answer besides 200, in the OpenAPI schema: every error body is an `ErrorResponse`, its
# `detail` one line (validation errors, the model's own checks, `pick`, `BodyLimit` and `Guard` alike).
ERRORS: dict = {status: {"model": ErrorResponse, "description": why} for status, why in [
    (400, "The body cannot be parsed (not UTF-8, or a broken form)"),
    (404, "No such model, or none of this task, is being served"),
    (413, "The body is over the size limit"),
    (422, "A field, or the input itself, is not valid (the message names it)"),
    (500, "An unexpected error (a bug: the server's log has the details)"),
]}


@dataclass
class ServedModel:
    name: str
    task: str  # a registered task's name (folio.tasks.TASKS)
    directory: str
    model: object  # the task's inference object (LanguageModel, TextClassifier, ...)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batcher: Batcher | None = None
    created: int = field(default_factory=lambda: int(time.time()))  # when it was loaded
    engine: object | None = None  # a language model's generations, batched (folio.tasks.lm.batching), once started

    def info(self) -> dict:
        """The model as OpenAI lists one (`id`, `object`, `created`, `owned_by`), with Folio's own fields."""
        config = getattr(self.model, "config", {}) or {}
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "folio", "task": self.task,
                "directory": self.directory, "model": config.get("model", {}), "labels": getattr(self.model, "labels", None)}


def load_model(spec: str, dtype: str = "auto") -> ServedModel:
    """`DIR` or `NAME=DIR` → the model, loaded by the task its config.json names (`dtype`: `folio serve --dtype`)."""
    name, _, directory = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(directory)
    task = task_of(path)
    if task.routes is None:
        raise CheckpointError(f"{path}/config.json: task {task.name!r} cannot be served")
    return ServedModel(name or path.resolve().name, task.name, str(path), task.load(path, dtype=dtype))


# A task route's way to its model: pick(name) → the served model of that name (which must be of the task), or
# the first served model of the task when name is None; an HTTPException (404/422) otherwise.
Pick = Callable[[str | None], ServedModel]


class Batcher:
    """Merges the texts of requests that arrive within `max_wait` seconds into one call of `fn`.

    `await submit(texts)` returns `fn(texts)`'s results for those texts; `fn` runs in a worker thread
    on up to `max_batch` texts at a time, one call after another.
    """

    def __init__(self, fn, max_batch: int = 128, max_wait: float = 0.005):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    async def submit(self, texts: list[str]) -> list:
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0][0])
            deadline = time.perf_counter() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job[0])
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                results = await asyncio.to_thread(self.fn, texts)
            except Exception as err:  # every waiting request gets the error
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for job_texts, future in jobs:
                if not future.done():
                    future.set_result(results[start : start + len(job_texts)])
                start += len(job_texts)


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


def create_app(specs: list[str], max_body_bytes: int = MAX_BODY_BYTES, shutdown: threading.Event | None = None,
               dtype: str = "auto") -> FolioApp:
    """The FastAPI application serving the models in `specs` (`DIR` or `NAME=DIR` each).

    `shutdown`, once set, tells long work in flight (generation streams) to end at its next step.
    """
    from folio import __version__

    models: dict[str, ServedModel] = {}
    for spec in specs:
        served = load_model(spec, dtype)
        if served.name in models:
            raise CheckpointError(f"two models are named {served.name!r}: name them with --model NAME=DIR")
        models[served.name] = served
    if not models:
        raise CheckpointError("no model to serve: give at least one --model DIR")

    app = FolioApp(max_body_bytes, title="Folio", version=__version__,
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

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    for task in TASKS.values():  # every task's routes, whether or not a model of it is served (then: 404)
        if task.routes is not None:
            task.hook("routes")(app, lambda name, task=task.name: pick(name, task))

    app.state.models = models
    app.state.shutdown = shutdown or threading.Event()
    return app


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
