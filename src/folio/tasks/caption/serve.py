"""`folio caption`'s HTTP route: `POST /v1/caption`, image files as a multipart form or base64 in JSON, with
per-word attention over the image grid."""

from __future__ import annotations

import asyncio
import base64
import json

import PIL.Image
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import Field, ValidationError

from folio.data.images import MAX_IMAGE_PIXELS
from folio.serve.api import ERRORS, Pick
from folio.serve.schemas import BeamSize, LengthPenalty, ModelRequest, text

MAX_IMAGES = 32  # images per caption request
MAX_IMAGE_BYTES = 16 << 20  # per image file (the body limit, 1 MiB by default, is usually the tighter one)
# base64 takes 4 characters per 3 bytes
Base64Image = text(4 * -(-MAX_IMAGE_BYTES // 3), min_chars=1, description="an image file (PNG, JPEG, ...) in base64, at "
             f"most {MAX_IMAGE_BYTES >> 20} MiB and {MAX_IMAGE_PIXELS:,} pixels")


class CaptionRequest(ModelRequest):
    images: list[Base64Image] = Field(min_length=1, max_length=MAX_IMAGES)  # type: ignore[valid-type]
    beam_size: BeamSize = 1
    length_penalty: LengthPenalty = 0.6
    attention: bool = Field(False, description="return, for each word, the attention weights over the image grid")


def add_routes(app: FastAPI, pick: Pick) -> None:
    # Pillow's own guard, for every image this process opens: a warning past the limit, an error past twice it
    # (decode_image refuses anything past the limit first, from the file's header)
    PIL.Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

    @app.post("/v1/caption", openapi_extra=_caption_request_body(), responses=ERRORS)
    async def caption(request: Request):
        body = await _caption_request(request)
        served = pick(body.model)
        captioner = served.model
        # decoded in a worker, never on the event loop (a bad or too large image: 422 naming it)
        images = await asyncio.to_thread(
            lambda: [captioner.decode_image(data, f"images[{i}]") for i, data in enumerate(body.images)])
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
        try:  # parsed as FastAPI parses the other routes' bodies, so a bad value is named by its field
            fields = json.loads(text)
        except json.JSONDecodeError as err:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", err.pos), "msg": "JSON decode error",
                                           "ctx": {"error": err.msg}}]) from None
        except (RecursionError, ValueError):  # nested too deep, or a number of too many digits
            raise HTTPException(400, "There was an error parsing the body") from None
        return CaptionRequest.model_validate(fields)
    except ValidationError as err:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}  # where FastAPI puts them
                                      for error in err.errors(include_url=False, include_context=False)]) from None
