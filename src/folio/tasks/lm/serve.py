"""`folio lm`'s HTTP route: `POST /v1/generate`, text generation streamed as server-sent events."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from folio.serve.app import ERRORS, Pick, ServedModel
from folio.serve.schemas import MAX_TEXT_CHARS, ModelRequest
from folio.tasks.lm import encode

MAX_NEW_TOKENS = 4_096

# Each event of /v1/generate's stream, in OpenAPI 3.2's `itemSchema` form (FastAPI's own SSE routes use it):
# a piece of text, then `event: done` with the count of characters (and `"reason": "shutdown"` when the server
# stopped the generation because it is shutting down), or `event: error` with the reason.
GENERATE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"enum": ["message", "done", "error"], "description": "absent (so `message`) on the text events"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "characters": {"type": "integer", "minimum": 0},
                           "reason": {"enum": ["shutdown"]}, "detail": {"type": "string"}},
            "minProperties": 1, "maxProperties": 2,
        }},
    },
}


class GenerateRequest(ModelRequest):
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, gt=0, le=100)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = Field(None, max_length=16, description="stop at the first of these strings")
    stream: bool = Field(True, description="server-sent events (true) or one JSON object (false)")


def add_routes(app: FastAPI, pick: Pick) -> None:
    @app.post("/v1/generate", responses={**ERRORS, 200: {"description": "Server-sent events, or one JSON object",
                                                         "content": {"text/event-stream": {
                                                             "itemSchema": GENERATE_EVENT_SCHEMA}}}})
    async def generate(body: GenerateRequest, request: Request):
        served = pick(body.model)
        options = dict(max_new_tokens=body.max_new_tokens, temperature=body.temperature, top_k=body.top_k,
                       top_p=body.top_p, seed=body.seed, stop=body.stop)
        lm = served.model
        encode(lm.vocab, body.prompt)  # unknown characters fail here, as a 422, before the stream starts
        shutdown: threading.Event = request.app.state.shutdown
        if not body.stream:
            async with served.lock:
                pieces = await asyncio.to_thread(lambda: list(_pieces(lm, body.prompt, options, shutdown)))
            result = {"model": served.name, "text": "".join(pieces)}
            return {**result, "reason": "shutdown"} if shutdown.is_set() else result
        return StreamingResponse(_event_stream(served, body.prompt, options, shutdown),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _pieces(lm, prompt: str, options: dict, *stops: threading.Event) -> Iterator[str]:
    """The new text of one sample, piece by piece, until it ends or one of `stops` is set (checked before
    every step, so a stop costs at most one step)."""
    for pieces in lm.stream(prompt, **options):
        if any(stop.is_set() for stop in stops):
            return
        yield pieces[0]


async def _event_stream(served: ServedModel, prompt: str, options: dict, shutdown: threading.Event):
    """Server-sent events: `data: {"text": ...}` per generated piece, then `event: done`.

    The model runs in a worker thread that hands pieces over through a queue; when the client goes away,
    or the server begins to shut down (`shutdown` is set), the thread stops after its current step, and
    a shut-down stream still ends with its `done` event (`"reason": "shutdown"`).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for piece in _pieces(served.model, prompt, options, stop, shutdown):
                loop.call_soon_threadsafe(queue.put_nowait, piece)
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
                    done = {"characters": produced, **({"reason": "shutdown"} if shutdown.is_set() else {})}
                    yield f"event: done\ndata: {json.dumps(done)}\n\n"
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
