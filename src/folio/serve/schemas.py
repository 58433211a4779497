"""What every route of the HTTP API shares: the error body, the request base, the field types and the size
limits. Each task's request bodies extend `ModelRequest` in its own `serve.py` and build their fields from the
types here, so every field is checked where it enters: Pydantic validates the body and a bad field gets a 422
whose one-line message names it (`folio.serve.app` words it).

The limits, all documented in the OpenAPI schema:

* a float is finite (no NaN, no ±Infinity, no 1e999);
* an int has a bound on both sides (`Seed`: 0 to 2**63 - 1, what torch's generators take; the rest are
  counts with their own small limits);
* a text is valid Unicode that UTF-8 can encode (no lone surrogates such as the JSON escape "\\ud800"),
  at most MAX_TEXT_CHARS long, and at most MAX_TEXTS of them per request.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXTS = 256  # texts per request
MAX_TEXT_CHARS = 20_000
MAX_NAME_CHARS = 200  # a model's name
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds


def text(max_chars: int = MAX_TEXT_CHARS, min_chars: int = 0, **field) -> object:
    """A text field, `min_chars` to `max_chars` characters: `prompt: text(min_chars=1)`. Pydantic itself refuses
    text that UTF-8 cannot encode (error type `string_unicode`)."""
    return Annotated[str, Field(min_length=min_chars, max_length=max_chars, **field)]


# A finite float: NaN, Infinity and 1e999 (which JSON parsers read as infinity) get a 422.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# A random seed: the same seed gives the same output on the same machine.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="a random seed, 0 to 2**63 - 1")]
Text = text()
# A request's list of input texts (classify, translate, ...): 1 to MAX_TEXTS, each at most MAX_TEXT_CHARS.
Texts = Annotated[list[Text], Field(min_length=1, max_length=MAX_TEXTS)]  # type: ignore[valid-type]
BeamSize = Annotated[int, Field(ge=1, le=16, description="beams searched (1: greedy)")]
LengthPenalty = Annotated[float, Field(ge=0, le=5, allow_inf_nan=False,
                                       description="beam scores are divided by length ** length_penalty")]


class FieldError(BaseModel):
    """One field that failed validation."""

    loc: list[str | int] = Field(description="where the bad value is, e.g. [\"body\", \"texts\", 0]")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    detail: str = Field(description="one line: what was wrong (naming the field) and how to fix it")
    errors: list[FieldError] | None = Field(None, description="for fields that fail validation, one entry per field")


class ModelRequest(BaseModel):
    """The fields every model route takes; a task's request body extends it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())  # a misspelt field is an error, not ignored

    model: text(MAX_NAME_CHARS) | None = Field(  # type: ignore[valid-type]
        None, description="a served model's name (default: the first of the right task)")
