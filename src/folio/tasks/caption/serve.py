"""`folio caption`'s HTTP route: `POST /v1/caption`, image files as a multipart form or base64 in JSON, with
per-word attention over the image grid."""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError

from folio.serve.app import ERRORS, Pick
from folio.serve.schemas import ModelRequest

MAX_IMAGES = 32  # images per caption request


class CaptionRequest(ModelRequest):
    images: list[Annotated[str, Field(min_length=1, description="an image file (PNG, JPEG, ...) in base64")]] = Field(
        min_length=1, max_length=MAX_IMAGES)
    beam_size: int = Field(1, ge=1, le=16)
    length_penalty: float = Field(0.6, ge=0, le=5)
    attention: bool = Field(False, description="return, for each word, the attention weights over the image grid")


def add_routes(app: FastAPI, pick: Pick) -> None:
    @app.post("/v1/caption", openapi_extra=_caption_request_body(), responses=ERRORS)
    async def caption(request: Request):
        body = await _caption_request(request)
        served = pick(body.model)
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
