"""`folio embed`'s HTTP route: OpenAI's `POST /v1/embeddings`, for the sentence encoders (`folio serve --model
minilm`); requests that arrive together share one batch."""

from __future__ import annotations

import base64

from fastapi import FastAPI

from folio.serve.api import Batcher, Pick
from folio.serve.openai import EMBEDDINGS, OPENAI_ERRORS, EmbeddingRequest, OpenAIError, pick_model


def add_routes(app: FastAPI, pick: Pick) -> None:
    @app.post(EMBEDDINGS, responses=OPENAI_ERRORS)
    async def embeddings(body: EmbeddingRequest) -> dict:
        served = pick_model(pick, body.model)
        embedder = served.model
        if body.dimensions is not None and body.dimensions != embedder.dim:
            raise OpenAIError(400, f"model {served.name!r} gives {embedder.dim}-dimensional vectors, not "
                                   f"{body.dimensions}: leave dimensions out or give {embedder.dim}", "dimensions")
        if served.batcher is None:
            served.batcher = Batcher(lambda texts: list(zip(*embedder.embed(texts), strict=True)))
        results = await served.batcher.submit(body.texts)
        data = [{"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
                for i, (vector, _) in enumerate(results)]
        tokens = sum(count for _, count in results)
        return {"object": "list", "data": data, "model": served.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encoded(vector, encoding_format: str) -> list[float] | str:
    """A vector as floats, or OpenAI's base64: its little-endian float32 bytes (what the `openai` client asks
    for by default, and decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.float().numpy().astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
