"""Request bodies of the HTTP API. Pydantic validates them: a bad field gets a 422 that names it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXTS = 256  # texts per classify / translate request
MAX_TEXT_CHARS = 20_000
MAX_NEW_TOKENS = 4_096
MAX_IMAGES = 32  # images per caption request


class FieldError(BaseModel):
    """One field that failed validation (FastAPI's own 422 entries, which may carry `input` and `ctx` too)."""

    loc: list[str | int] = Field(description="where the bad value is, e.g. [\"body\", \"texts\", 0]")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The body of every 4xx answer."""

    detail: str | list[FieldError] = Field(
        description="what was wrong and how to fix it; for fields that fail validation, one entry per field")


# Each event of /v1/generate's stream, in OpenAPI 3.2's `itemSchema` form (FastAPI's own SSE routes use it):
# a piece of text, then `event: done` with the count of characters, or `event: error` with the reason.
GENERATE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"enum": ["message", "done", "error"], "description": "absent (so `message`) on the text events"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}, "characters": {"type": "integer", "minimum": 0},
                           "detail": {"type": "string"}},
            "minProperties": 1, "maxProperties": 1,
        }},
    },
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())  # a misspelt field is an error, not ignored

    model: str | None = Field(None, description="a served model's name (default: the first of the right task)")


class GenerateRequest(_Request):
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, gt=0, le=100)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = Field(None, max_length=16, description="stop at the first of these strings")
    stream: bool = Field(True, description="server-sent events (true) or one JSON object (false)")


class ClassifyRequest(_Request):
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(min_length=1, max_length=MAX_TEXTS)
    explain: bool = Field(False, description="add per-token contributions (integrated gradients; slower)")


class TranslateRequest(_Request):
    texts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(min_length=1, max_length=MAX_TEXTS)
    beam_size: int = Field(1, ge=1, le=16)
    n_best: int = Field(1, ge=1, le=16)
    length_penalty: float = Field(0.6, ge=0, le=5)
    attention: bool = Field(False, description="return each translation's attention weights")
    truncate: bool = Field(False, description="cut sources over the model's limit instead of refusing them")


class CaptionRequest(_Request):
    images: list[Annotated[str, Field(min_length=1, description="an image file (PNG, JPEG, ...) in base64")]] = Field(
        min_length=1, max_length=MAX_IMAGES)
    beam_size: int = Field(1, ge=1, le=16)
    length_penalty: float = Field(0.6, ge=0, le=5)
    attention: bool = Field(False, description="return, for each word, the attention weights over the image grid")
