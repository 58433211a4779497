"""`folio lm`'s OpenAI-compatible routes: `POST /v1/completions` and `POST /v1/chat/completions`, for every
causal language model (GRU/LSTM, GPT, pretrained Llamas), on `stream_text` as `/v1/generate` is.

Chat messages are rendered with the model's own chat template (a GGUF's or a Hugging Face tokenizer's);
a model without one (a Folio character or word model) answers 400 with `param` "messages": give it a
plain prompt on /v1/completions. `n` choices are `n` samples generated side by side (choice i with seed
+ i where a seed is given); `usage` counts the prompt's tokens as the model reads them and each choice's
text re-encoded in its vocabulary.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from folio.errors import FolioError
from folio.serve.api import Pick, ServedModel
from folio.serve.openai import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    DONE,
    MAX_CHOICES,
    OPENAI_ERRORS,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    SamplingRequest,
    new_id,
    now,
    pick_model,
    sse,
    usage,
)
from folio.tasks.lm.serve import count_tokens, prompt_tokens, stream_text

STREAM = {200: {"description": "One JSON object, or server-sent chunks (`stream`) ending with `data: [DONE]`",
                "content": {"text/event-stream": {}}}}


def add_openai_routes(app: FastAPI, pick: Pick) -> None:
    @app.post(COMPLETIONS, responses={**OPENAI_ERRORS, **STREAM})
    async def completions(body: CompletionRequest, request: Request):
        served = pick_model(pick, body.model)
        if len(body.prompts) * body.n > MAX_CHOICES:
            raise OpenAIError(400, f"{len(body.prompts)} prompts times n={body.n} is over the {MAX_CHOICES} choices a "
                                   "request may ask for", "n")
        prompts = [prompt for prompt in body.prompts for _ in range(body.n)]  # choice i: prompt i // n
        return await _respond(served, body, request, prompts, body.max_tokens, chat=False)

    @app.post(CHAT_COMPLETIONS, responses={**OPENAI_ERRORS, **STREAM})
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        served = pick_model(pick, body.model)
        render = getattr(served.model.vocab, "apply_chat_template", None)
        if render is None:
            raise OpenAIError(400, f"model {served.name!r} has no chat template (a {served.model.vocab.kind} "
                                   "vocabulary): send it a plain prompt on /v1/completions", "messages")
        try:
            prompt = await asyncio.to_thread(render, [m.turn() for m in body.messages], True)
        except FolioError as err:  # no template after all, or the template's raise_exception (a role it refuses)
            raise OpenAIError(400, f"model {served.name!r}: {err}", "messages") from None
        return await _respond(served, body, request, [prompt] * body.n, body.max_completion_tokens or body.max_tokens,
                              chat=True)


async def _respond(served: ServedModel, body: SamplingRequest, request: Request, prompts: list[str],
                   max_tokens: int | None, chat: bool):
    """Generate one choice per prompt; answer one JSON object, or OpenAI's chunks when `body.stream`."""
    counts = {p: await asyncio.to_thread(prompt_tokens, served, p) for p in dict.fromkeys(prompts)}  # 400 if unfit
    options = body.sampling(max_tokens)
    streams = [stream_text(served, p, {**options, "seed": seed}, request, whole=not body.stream)
               for p, seed in zip(prompts, body.seeds(len(prompts)), strict=True)]
    head = {"id": new_id("chatcmpl" if chat else "cmpl"), "created": now(), "model": served.name}
    n_prompt = sum(counts[p] for p in prompts[:: body.n])  # each prompt once, however many choices it has
    if body.stream:
        chunks = _chunks(served, head, streams, n_prompt, body.include_usage, chat)
        return StreamingResponse(chunks, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    results = await asyncio.gather(*[_collect(s) for s in streams])
    choices = []
    for i, (text, reason) in enumerate(results):
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choices.append({"index": i, **choice, "logprobs": None, "finish_reason": reason})
    completion = sum(await asyncio.to_thread(lambda: [count_tokens(served, text) for text, _ in results]))
    return {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices,
            "usage": usage(n_prompt, completion), "system_fingerprint": None}


async def _collect(stream: AsyncIterator[tuple[str, str | None]]) -> tuple[str, str]:
    pieces, reasons = [], []
    async for piece, reason in stream:
        pieces.append(piece)
        reasons.append(reason)
    return "".join(pieces), (reasons and reasons[-1]) or "length"  # no reason: cut short by the server's shutdown


async def _chunks(served: ServedModel, head: dict, streams: list, n_prompt: int, include_usage: bool, chat: bool):
    """OpenAI's server-sent chunks: the choices' pieces as they come (each chunk one choice's, by `index`; chat
    chunks carry `delta`s, the first the assistant's role), each choice's last with its finish_reason; then the
    usage (`stream_options.include_usage`) and `[DONE]`. An error mid-stream is sent as `{"error": ...}`."""
    head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str | None, reason: str | None) -> str:
        if chat:
            delta = {"role": "assistant", "content": ""} if text is None else ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
        return sse({**head, "choices": [choice], **extra})

    queue: asyncio.Queue = asyncio.Queue()  # (choice, piece, reason); piece None: the choice has ended
    texts = [""] * len(streams)

    async def pump(index: int, stream) -> None:
        reason = None
        try:
            async for piece, reason in stream:
                texts[index] += piece
                await queue.put((index, piece, reason))
        except Exception as err:  # noqa: BLE001 (sent to the client as an error chunk)
            await queue.put((index, err, None))
            return
        if reason is None:  # cut short by the server's shutdown: the choice still ends
            await queue.put((index, "", "length"))
        await queue.put((index, None, None))

    if chat:
        for index in range(len(streams)):
            yield chunk(index, None, None)
    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(streams)
        while running:
            index, piece, reason = await queue.get()
            if piece is None:
                running -= 1
            elif isinstance(piece, Exception):
                error = OpenAIError(400, str(piece)) if isinstance(piece, FolioError) else \
                    OpenAIError(500, str(piece), type="server_error")
                yield sse(error.body())
                return
            elif piece or reason:
                yield chunk(index, piece, reason)
        if include_usage:
            completion = sum(await asyncio.to_thread(lambda: [count_tokens(served, t) for t in texts]))
            yield sse({**head, "choices": [], "usage": usage(n_prompt, completion)})
        yield DONE
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
