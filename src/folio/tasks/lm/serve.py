"""`folio lm`'s HTTP routes: `POST /v1/generate`, text generation streamed as server-sent events, and (from
`openai_routes`) OpenAI's `/v1/completions` and `/v1/chat/completions`; all of them generate through
`stream_text`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from folio.decoding.sampling import StopStrings
from folio.serve.app import ERRORS, Pick, ServedModel
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
        # unknown characters fail here, as a 422, before the stream starts (in a worker: tokenizing is model work)
        await asyncio.to_thread(encode, served.model.vocab, body.prompt)
        shutdown: threading.Event = request.app.state.shutdown
        if not body.stream:  # stream_text ends the generation at its next step once the client has gone
            generated = "".join([piece async for piece, _ in stream_text(served, body.prompt, options, request)])
            result = {"model": served.name, "text": generated}
            return {**result, "reason": "shutdown"} if shutdown.is_set() else result
        return StreamingResponse(_event_stream(served, body.prompt, options, request),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    from folio.tasks.lm.openai_routes import add_openai_routes  # (it imports stream_text from here)

    add_openai_routes(app, pick)


def prompt_tokens(served: ServedModel, prompt: str) -> int:
    """How many tokens the model reads for `prompt` (a begin-of-text id included where it adds one); a
    FolioError where it cannot generate from it (a masked LM or biLM, text without tokens it reads)."""
    return len(served.model._prompt_ids(prompt))


def count_tokens(served: ServedModel, text: str) -> int:
    """How many tokens `text` is in the model's vocabulary (a completion's, for OpenAI's `usage`)."""
    return len(encode(served.model.vocab, text)) if text else 0


async def stream_text(served: ServedModel, prompt: str, options: dict,
                      request: Request | None) -> AsyncIterator[tuple[str, str | None]]:
    """One sample's new text, piece by piece: `(piece, None)`, then a last `(piece, reason)` with reason
    "stop" (a stop string, not included, or the end-of-text token) or "length" (`max_new_tokens` reached).

    `options`: max_new_tokens, temperature, top_k, top_p, seed, stop (`LanguageModel.stream`'s names). The
    model runs in a worker thread, one sample per model at a time (`served.lock`, waiting samples in arrival
    order), and stops after its current step when the client disconnects or the server shuts down (then no
    reason comes: the iterator just ends).

    Stop strings are cut here rather than by `LanguageModel.stream`, and the model is asked for one step more
    than `max_new_tokens`: whether that step comes tells "length" from an end-of-text at the last step (the
    step costs one forward pass, only on samples that reach the limit).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    halt = threading.Event()
    shutdown: threading.Event | None = request.app.state.shutdown if request is not None else None
    limit, end = options["max_new_tokens"], object()

    def emit(item) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        try:
            cut = StopStrings(options.get("stop"))
            steps = 0
            for pieces in served.model.stream(prompt, **{**options, "max_new_tokens": limit + 1, "stop": None}):
                if halt.is_set() or (shutdown is not None and shutdown.is_set()):
                    return
                steps += 1
                if steps > limit:  # the sample did not end on its own
                    emit((cut.flush(), "length"))
                    return
                text = cut.feed(pieces[0])
                if cut.done:
                    emit((text, "stop"))
                    return
                if text:
                    emit((text, None))
            emit((cut.flush(), "stop"))  # the model wrote its end-of-text token
        except Exception as err:  # noqa: BLE001 (raised again on the event loop, to the route)
            emit(err)
        finally:
            emit(end)

    async with served.lock:
        worker = asyncio.create_task(asyncio.to_thread(produce))
        try:
            while (item := await queue.get()) is not end:
                if isinstance(item, Exception):
                    raise item
                yield item
                if request is not None and await request.is_disconnected():
                    return
        finally:
            halt.set()  # a disconnect or an error ends the thread at its next step
            await worker


async def _event_stream(served: ServedModel, prompt: str, options: dict, request: Request):
    """Server-sent events: `data: {"text": ...}` per generated piece, then `event: done` (with `"reason":
    "shutdown"` when the server's shutdown ended the generation), or `event: error` with the reason."""
    shutdown: threading.Event = request.app.state.shutdown
    produced = 0
    try:
        async for piece, _ in stream_text(served, prompt, options, request):
            if piece:
                produced += len(piece)
                yield f"data: {json.dumps({'text': piece})}\n\n"
    except Exception as err:  # noqa: BLE001 (reported to the client as an error event)
        yield f"event: error\ndata: {json.dumps({'detail': str(err)})}\n\n"
        return
    done = {"characters": produced, **({"reason": "shutdown"} if shutdown.is_set() else {})}
    yield f"event: done\ndata: {json.dumps(done)}\n\n"
