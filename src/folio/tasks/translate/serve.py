"""`folio translate`'s HTTP route: `POST /v1/translate` (beam search, n-best, attention weights)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException
from pydantic import Field

from folio.serve.api import ERRORS, Pick
from folio.serve.schemas import BeamSize, LengthPenalty, ModelRequest, Texts


class TranslateRequest(ModelRequest):
    texts: Texts
    beam_size: BeamSize = 1
    n_best: int = Field(1, ge=1, le=16, description="hypotheses returned per text, at most beam_size")
    length_penalty: LengthPenalty = 0.6
    attention: bool = Field(False, description="return each translation's attention weights")
    truncate: bool = Field(False, description="cut sources over the model's limit instead of refusing them")


def add_routes(app: FastAPI, pick: Pick) -> None:
    @app.post("/v1/translate", responses=ERRORS)
    async def translate(body: TranslateRequest):
        served = pick(body.model)
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
