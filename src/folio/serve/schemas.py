"""What every route of the HTTP API shares: the error body, the request base and the size limits. Each task's
request bodies extend `ModelRequest` in its own `serve.py`; Pydantic validates them: a bad field gets a 422 that
names it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXTS = 256  # texts per request
MAX_TEXT_CHARS = 20_000

# A request's list of input texts (classify, translate, ...): 1 to MAX_TEXTS, each at most MAX_TEXT_CHARS.
Texts = Annotated[list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]], Field(min_length=1, max_length=MAX_TEXTS)]


class FieldError(BaseModel):
    """One field that failed validation (FastAPI's own 422 entries, which may carry `input` and `ctx` too)."""

    loc: list[str | int] = Field(description="where the bad value is, e.g. [\"body\", \"texts\", 0]")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The body of every 4xx answer."""

    detail: str | list[FieldError] = Field(
        description="what was wrong and how to fix it; for fields that fail validation, one entry per field")


class ModelRequest(BaseModel):
    """The fields every model route takes; a task's request body extends it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())  # a misspelt field is an error, not ignored

    model: str | None = Field(None, description="a served model's name (default: the first of the right task)")
