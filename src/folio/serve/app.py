"""`folio serve`: every trained model behind one HTTP API (FastAPI) and a web page.

    folio serve --model runs/lm --model runs/imdb --model runs/bible --port 8000

Endpoints: `POST /v1/generate` (server-sent events, or one JSON object with `"stream": false`),
`POST /v1/classify` (optionally with per-token contributions), `POST /v1/translate` (beam search,
n-best, attention weights), `POST /v1/caption` (image files uploaded as a multipart form, or base64 in JSON; per-word attention over
the image grid),
`GET /v1/models`, `GET /healthz`, the OpenAPI schema at `/openapi.json`
and the page at `/`.

Model work runs in worker threads, never on the event loop. Classification requests that arrive
together are merged into one batch (`Batcher`); each model runs one batch at a time, and waiting
requests are served in arrival order (asyncio locks are FIFO).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError

from folio.errors import CheckpointError, FolioError
from folio.serve.page import PAGE
from folio.serve.schemas import (
    GENERATE_EVENT_SCHEMA,
    MAX_IMAGES,
    CaptionRequest,
    ClassifyRequest,
    ErrorResponse,
    GenerateRequest,
    TranslateRequest,
)

MAX_BODY_BYTES = 1 << 20  # 1 MiB per request body

# What the model routes answer besides 200, in the OpenAPI schema. FastAPI on its own documents only its
# validation errors (422 with a list); the model's own checks, `pick` and `BodyLimit` answer with a string.
ERRORS: dict = {status: {"model": ErrorResponse, "description": why} for status, why in [
    (400, "The body cannot be parsed (not UTF-8, or a broken form)"),
    (404, "No such model, or none of this task, is being served"),
    (413, "The body is over the size limit"),
    (422, "A field, or the input itself, is not valid (the message names it)"),
]}


@dataclass
class ServedModel:
    name: str
    task: str  # lm | classify | translate | caption
    directory: str
    model: object  # LanguageModel | TextClassifier | Translator | ImageCaptioner
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batcher: Batcher | None = None

    def info(self) -> dict:
        config = getattr(self.model, "config", {}) or {}
        return {"name": self.name, "task": self.task, "directory": self.directory, "model": config.get("model", {}),
                "labels": getattr(self.model, "labels", None)}


def load_model(spec: str) -> ServedModel:
    """`DIR` or `NAME=DIR` → the model, by the task its config.json names."""
    name, _, directory = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(directory)
    config_path = path / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"--model {directory}: no config.json there (is it a model directory?)")
    try:
        task = json.loads(config_path.read_text())["task"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{config_path}: not a Folio model config ({err})") from err
    if task == "lm":
        from folio.tasks.lm import LanguageModel as loader
    elif task == "classify":
        from folio.tasks.classify import TextClassifier as loader
    elif task == "translate":
        from folio.tasks.translate import Translator as loader
    elif task == "caption":
        from folio.tasks.caption import ImageCaptioner as loader
    else:
        raise CheckpointError(f"{config_path}: task {task!r} cannot be served")
    return ServedModel(name or path.resolve().name, task, str(path), loader.from_pretrained(path))


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


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def create_app(specs: list[str], max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI application serving the models in `specs` (`DIR` or `NAME=DIR` each)."""
    from folio import __version__

    models: dict[str, ServedModel] = {}
    for spec in specs:
        served = load_model(spec)
        if served.name in models:
            raise CheckpointError(f"two models are named {served.name!r}: name them with --model NAME=DIR")
        models[served.name] = served
    if not models:
        raise CheckpointError("no model to serve: give at least one --model DIR")

    app = FastAPI(title="Folio", version=__version__,
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
        return JSONResponse(status_code=422, content={"detail": str(err)})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "models": len(models)}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"models": [m.info() for m in models.values()]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/v1/generate", responses={**ERRORS, 200: {"description": "Server-sent events, or one JSON object",
                                                         "content": {"text/event-stream": {
                                                             "itemSchema": GENERATE_EVENT_SCHEMA}}}})
    async def generate(body: GenerateRequest, request: Request):
        served = pick(body.model, "lm")
        options = dict(max_new_tokens=body.max_new_tokens, temperature=body.temperature, top_k=body.top_k,
                       top_p=body.top_p, seed=body.seed, stop=body.stop)
        lm = served.model
        from folio.tasks.lm import encode

        encode(lm.vocab, body.prompt)  # unknown characters fail here, as a 422, before the stream starts
        if not body.stream:
            async with served.lock:
                text = await asyncio.to_thread(lambda: lm.generate(body.prompt, **options))
            return {"model": served.name, "text": text[len(body.prompt):]}
        return StreamingResponse(_event_stream(served, body.prompt, options, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/classify", responses=ERRORS)
    async def classify(body: ClassifyRequest):
        served = pick(body.model, "classify")
        clf = served.model
        if body.explain:
            async with served.lock:
                explained = await asyncio.to_thread(lambda: [clf.explain(t) for t in body.texts])
            return {"model": served.name, "results": explained}
        clf.encode(body.texts)  # empty or letter-less texts fail here, as a 422
        if served.batcher is None:
            served.batcher = Batcher(lambda texts: clf.predict(texts, batch_size=128))
        return {"model": served.name, "results": await served.batcher.submit(body.texts)}

    @app.post("/v1/translate", responses=ERRORS)
    async def translate(body: TranslateRequest):
        served = pick(body.model, "translate")
        if body.n_best > body.beam_size:
            raise HTTPException(422, f"n_best ({body.n_best}) cannot exceed beam_size ({body.beam_size})")
        async with served.lock:
            translations = await asyncio.to_thread(
                lambda: served.model.translate(body.texts, beam_size=body.beam_size, length_penalty=body.length_penalty,
                                               num_return=body.n_best, return_attention=body.attention,
                                               truncate=body.truncate))
        results = []
        for t in translations:
            item = {"source": t.source, "translation": t.text, "score": t.score}
            if body.n_best > 1:
                item["n_best"] = [{"translation": h.text, "score": h.score} for h in t.n_best]
            if body.attention and t.attention is not None:
                item.update(attention=[[round(w, 4) for w in row] for row in t.attention.tolist()],
                            source_tokens=t.source_pieces, target_tokens=t.target_pieces)
            results.append(item)
        return {"model": served.name, "results": results}

    @app.post("/v1/caption", openapi_extra=_caption_request_body(), responses=ERRORS)
    async def caption(request: Request):
        body = await _caption_request(request)
        served = pick(body.model, "caption")
        captioner = served.model
        images = [captioner.decode_image(data, f"images[{i}]") for i, data in enumerate(body.images)]  # bad ones: 422
        async with served.lock:
            captions = await asyncio.to_thread(
                lambda: captioner.describe(images, beam_size=body.beam_size, length_penalty=body.length_penalty,
                                           return_attention=body.attention))
        results = []
        for c in captions:
            item = {"caption": c.text, "score": c.score, "words": c.words}
            if body.attention and c.attention is not None:
                item["attention"] = [[[round(w, 4) for w in row] for row in grid] for grid in c.attention.tolist()]
            results.append(item)
        return {"model": served.name, "grid": captioner.model.config.grid_size, "results": results}

    app.state.models = models
    return BodyLimit(app, max_body_bytes) if max_body_bytes else app


def _caption_request_body() -> dict:
    """/v1/caption takes JSON (images as base64 text) or a multipart form upload (image files, the same fields)."""
    schema = CaptionRequest.model_json_schema()
    # additionalProperties: as in the JSON body, an unknown field is refused (422), so the schema must not allow it
    form = {"type": "object", "required": ["images"], "additionalProperties": False, "properties": {
        **{k: v for k, v in schema["properties"].items() if k != "images"},
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                   "maxItems": MAX_IMAGES},
    }}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema},
                                                          "multipart/form-data": {"schema": form}}}}


async def _caption_request(request: Request) -> CaptionRequest:
    """The request's fields, validated by CaptionRequest whichever way they came (a bad one: 422 naming it)."""
    kind = request.headers.get("content-type", "")
    try:
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            fields: dict = {}
            for key, value in form.multi_items():
                data = await value.read() if hasattr(value, "read") else str(value).encode()  # a file or a text field
                if key == "images":
                    fields.setdefault("images", []).append(base64.b64encode(data).decode())
                else:
                    fields[key] = data.decode(errors="replace")
            return CaptionRequest.model_validate(fields)
        try:  # as text: a json_invalid error holding raw bytes would fail to encode (a 500, not a 422)
            text = (await request.body()).decode()
        except UnicodeDecodeError:
            raise HTTPException(400, "the body is not UTF-8 text: send JSON, or the images as a multipart form") from None
        return CaptionRequest.model_validate_json(text)
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False, include_context=False)) from None


async def _event_stream(served: ServedModel, prompt: str, options: dict, request):
    """Server-sent events: `data: {"text": ...}` per generated piece, then `event: done`.

    The model runs in a worker thread that hands pieces over through a queue; when the client goes
    away (or the server shuts down) the thread is told to stop after its current step.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for pieces in served.model.stream(prompt, **options):
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, pieces[0])
        except Exception as err:  # noqa: BLE001 (reported to the client as an error event)
            loop.call_soon_threadsafe(queue.put_nowait, err)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, end)

    async with served.lock:
        worker = asyncio.create_task(asyncio.to_thread(produce))
        produced = 0
        try:
            while True:
                item = await queue.get()
                if item is end:
                    yield f"event: done\ndata: {json.dumps({'characters': produced})}\n\n"
                    break
                if isinstance(item, Exception):
                    yield f"event: error\ndata: {json.dumps({'detail': str(item)})}\n\n"
                    break
                if item:
                    produced += len(item)
                    yield f"data: {json.dumps({'text': item})}\n\n"
        finally:
            stop.set()  # a disconnect closes this generator: the thread stops at its next step
            await worker


def serve(specs: list[str], host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Run the server until Ctrl-C / SIGTERM; in-flight requests get a few seconds to finish."""
    import uvicorn

    app = create_app(specs, max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
