"""`folio classify`'s HTTP route: `POST /v1/classify`; requests that arrive together share one batch."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from pydantic import Field

from folio.serve.api import ERRORS, Batcher, Pick
from folio.serve.schemas import ModelRequest, Texts


class ClassifyRequest(ModelRequest):
    texts: Texts
    explain: bool = Field(False, description="add per-token contributions (integrated gradients; slower)")


def add_routes(app: FastAPI, pick: Pick) -> None:
    @app.post("/v1/classify", responses=ERRORS)
    async def classify(body: ClassifyRequest):
        served = pick(body.model)
        clf = served.model
        if body.explain:
            async with served.lock:
                explained = await asyncio.to_thread(lambda: [clf.explain(t) for t in body.texts])
            return {"model": served.name, "results": explained}
        await asyncio.to_thread(clf.encode, body.texts)  # empty or letter-less texts fail here, as a 422
        if served.batcher is None:
            served.batcher = Batcher(lambda texts: clf.predict(texts, batch_size=128))
        return {"model": served.name, "results": await served.batcher.submit(body.texts)}
