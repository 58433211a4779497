"""`folio lm`'s HTTP routes: `POST /v1/generate`, text generation streamed as server-sent events, and (from
`openai_routes`) OpenAI's `/v1/completions` and `/v1/chat/completions`; all of them generate through
`stream_text`.

Concurrent generations of one model share each step (continuous batching: `folio.tasks.lm.batching`, one
`BatchedGenerator` per served language model, made at its first request).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from folio.serve.api import ERRORS, Pick, ServedModel
from folio.serve.schemas import FiniteFloat, ModelRequest, Seed, text
from folio.tasks.lm import encode
from folio.tasks.lm.batching import BatchedGenerator

MAX_NEW_TOKENS = 4_096
MAX_TOP_K = 1_000_000  # more than any vocabulary
MAX_STOP_CHARS = 1_000  # per stop string
MAX_BATCH = 16  # generations sharing a step; later ones wait for a row

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
        if not body.stream:  # stream_text ends the generation at its next step once the client has gone
            pieces = stream_text(served, body.prompt, options, request, whole=True)
            generated = "".join([piece async for piece, _ in pieces])
            result = {"model": served.name, "text": generated}
            return {**result, "reason": "shutdown"} if request.app.state.shutdown.is_set() else result
        return StreamingResponse(_event_stream(served, body.prompt, options, request),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    from folio.tasks.lm.openai_routes import add_openai_routes  # (it imports stream_text from here)

    add_openai_routes(app, pick)


def prompt_tokens(served: ServedModel, prompt: str) -> int:
    """How many tokens the model reads for `prompt` (a begin-of-text id included where it adds one); a
    FolioError where it cannot generate from it (text without tokens it reads)."""
    return len(served.model._prompt_ids(prompt))


def count_tokens(served: ServedModel, text: str) -> int:
    """How many tokens `text` is in the model's vocabulary (a completion's, for OpenAI's `usage`)."""
    return len(encode(served.model.vocab, text)) if text else 0


async def stream_text(served: ServedModel, prompt: str, options: dict, request: Request | None,
                      whole: bool = False) -> AsyncIterator[tuple[str, str | None]]:
    """The new text of one sample of `served`'s language model after `prompt`, piece by piece: (piece, None)
    items, then (its last piece, finish reason): "stop" (a stop string or the end of text) or "length"
    (`max_new_tokens` reached). `options`: max_new_tokens, temperature, top_k, top_p, seed, stop (None or left
out: the default).

    The generation shares each step of the model with the others in flight (`BatchedGenerator`). It ends at its
    next step, without a finish reason, when the client of `request` goes away or the server shuts down
    (`request.app.state.shutdown`); and when the caller stops iterating. Bad options raise `FolioError`.
    `whole`: one item, the whole text and its reason (an answer that is not streamed): the batcher's thread
    keeps the pieces, and wakes the event loop once, not at every token.

        >>> async for piece, reason in stream_text(served, "ROMEO:", {"max_new_tokens": 20}, request): ...  # doctest: +SKIP
    """
    generator = _generator(served)
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()

    held: list[str] = []  # whole: the pieces so far

    def deliver(item) -> None:  # in the batcher's thread
        if whole and not isinstance(item, BaseException):
            held.append(item[0])
            if item[1] is None:
                return
            item = ("".join(held), item[1])
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the event loop has closed (the server stopped): nobody is listening
            pass

    stops = () if request is None else (request.app.state.shutdown,)
    options = {key: value for key, value in options.items() if value is not None}  # None: the default
    sequence = await asyncio.to_thread(generator.submit, prompt, deliver, stops=stops, **options)  # tokenizes
    watcher = None if request is None else asyncio.create_task(_cancel_when_gone(request, sequence))
    try:
        while True:
            item = await items.get()
            if isinstance(item, BaseException):
                raise item
            if item[1] == "cancelled":  # (whole: the text until then, without a reason)
                if item[0]:
                    yield item[0], None
                return
            yield item
            if item[1] is not None:
                return
    finally:
        sequence.cancel()  # a caller that stops early (or a disconnect that closes this generator) frees the row
        if watcher is not None:
            watcher.cancel()


def _generator(served: ServedModel) -> BatchedGenerator:
    if served.engine is None:
        served.engine = BatchedGenerator(served.model, MAX_BATCH)
    return served.engine


async def _cancel_when_gone(request: Request, sequence) -> None:
    """Cancel `sequence` once its client has gone. The request's body has been read, so the ASGI server's next
    message is its disconnect (or the end of the answer), as Starlette's streaming responses listen for it:
    no polling."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    sequence.cancel()


async def _event_stream(served: ServedModel, prompt: str, options: dict, request: Request):
    """Server-sent events: `data: {"text": ...}` per generated piece, then `event: done` with the count of
    characters (and `"reason": "shutdown"` when the server stopped the generation as it shut down), or
    `event: error` with the reason."""
    produced = 0
    try:
        async for piece, _ in stream_text(served, prompt, options, request):
            if piece:
                produced += len(piece)
                yield f"data: {json.dumps({'text': piece})}\n\n"
    except Exception as err:  # noqa: BLE001 (reported to the client as an error event)
        yield f"event: error\ndata: {json.dumps({'detail': str(err)})}\n\n"
        return
    done = {"characters": produced, **({"reason": "shutdown"} if request.app.state.shutdown.is_set() else {})}
    yield f"event: done\ndata: {json.dumps(done)}\n\n"
