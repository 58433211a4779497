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

from folio.serve.app import ERRORS, Pick, ServedModel, until_disconnected
from folio.serve.schemas import FiniteFloat, ModelRequest, Seed, text
from folio.tasks.lm import encode

MAX_NEW_TOKENS = 4_096
MAX_TOP_K = 1_000_000  # more than any vocabulary
MAX_STOP_CHARS = 1_000  # per stop string

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
    prompt: text(min_chars=1)  # type: ignore[valid-type]
    max_new_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: FiniteFloat = Field(1.0, gt=0, le=100)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description=f"1 to {MAX_TOP_K:,} (past the vocabulary: all)")
    top_p: FiniteFloat | None = Field(None, gt=0, le=1)
    seed: Seed | None = None
    stop: list[text(MAX_STOP_CHARS, min_chars=1)] | None = Field(  # type: ignore[valid-type]
        None, max_length=16, description="stop at the first of these strings")
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
        # unknown characters fail here, as a 422, before the stream starts (in a worker: tokenizing is model work)
        await asyncio.to_thread(encode, lm.vocab, body.prompt)
        shutdown: threading.Event = request.app.state.shutdown
        if not body.stream:  # the generation ends at its next step once the client has gone
            async with served.lock:
                pieces = await until_disconnected(request, lambda gone: list(_pieces(lm, body.prompt, options, gone,
                                                                                    shutdown)))
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
