"""OpenAI's HTTP protocol, the small API module the tasks' OpenAI-compatible routes import: request bodies,
response shapes, server-sent chunks and errors. The routes themselves are each task's (`folio.tasks.lm.openai_routes`:
`/v1/completions` and `/v1/chat/completions`; `folio.tasks.embed.serve`: `/v1/embeddings`); the host
(`folio.serve.app`) serves `GET /v1/models` in OpenAI's list shape and installs the error handlers that answer
OpenAI's paths in OpenAI's shape. Like `folio.serve.api`, this module imports neither a task nor the host.

So the official clients (`openai`, LangChain's, chat UIs) talk to `folio serve` as they talk to OpenAI:

    >>> from openai import OpenAI                                              # doctest: +SKIP
    >>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")  # doctest: +SKIP
    >>> client.completions.create(model="lm", prompt="ROMEO:", max_tokens=20).choices[0].text  # doctest: +SKIP

Errors on these paths use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and OpenAI's
statuses: a field that fails validation (Pydantic's 422 on Folio's own routes) is a 400
`invalid_request_error` whose `param` names the field; an unknown model a 404 `model_not_found`. Unknown
fields are ignored, as OpenAI's clients send many; the fields used are checked as everywhere in Folio
(finite floats, bounded integers, encodable text).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from folio.serve.schemas import MAX_TEXTS, text
from folio.serve.schemas import Seed as FolioSeed

MAX_TOKENS = 4_096  # max_tokens per choice
MAX_CHOICES = 16  # n, times the prompts of a /v1/completions request
MAX_STOPS = 4  # stop strings, as OpenAI allows
MAX_MESSAGES = 256

# The paths OpenAI defines that Folio serves: errors here take OpenAI's shape (`install_error_handlers`).
COMPLETIONS, CHAT_COMPLETIONS, EMBEDDINGS, MODELS = "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models"


def is_openai_path(path: str) -> bool:
    return path in (COMPLETIONS, CHAT_COMPLETIONS, EMBEDDINGS, MODELS) or path.startswith(MODELS + "/")


Text = text()  # Pydantic itself refuses text UTF-8 cannot encode (JSON's lone \ud800 escapes)
Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False, description="0: greedy decoding")]
TopP = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, description="0: greedy decoding")]
Seed = Annotated[FolioSeed, Field(description="the same seed gives the same text (choice i: seed + i)")]
Stop = Annotated[Text, Field(min_length=1)]


class OpenAIRequest(BaseModel):
    """The fields every OpenAI route reads; the many others OpenAI's clients send are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Text = Field(description="a served model's name (GET /v1/models)")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(False, description="a last chunk with the usage and no choices, before [DONE]")


class SamplingRequest(OpenAIRequest):
    """What /v1/completions and /v1/chat/completions share."""

    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="new tokens per choice (default 16)")
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices per prompt")
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self, max_tokens: int | None) -> dict:
        """Folio's sampling options (`LanguageModel.stream`'s names): temperature or top_p 0 is greedy."""
        greedy = self.temperature == 0 or self.top_p == 0
        return dict(max_new_tokens=max_tokens or 16, temperature=1.0 if greedy else self.temperature,
                    top_k=1 if greedy else None, top_p=None if greedy or self.top_p == 1 else self.top_p,
                    seed=self.seed, stop=[self.stop] if isinstance(self.stop, str) else self.stop)

    def seeds(self, count: int) -> list[int | None]:
        """Choice i's seed: seed + i (wrapping), so one seed gives n different, reproducible choices."""
        return [None if self.seed is None else (self.seed + i) % 2**63 for i in range(count)]

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingRequest):
    prompt: Annotated[Text, Field(min_length=1)] | Annotated[list[Annotated[Text, Field(min_length=1)]],
                                                              Field(min_length=1, max_length=MAX_CHOICES)]

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_TEXTS)] | None = None

    def turn(self) -> dict[str, str]:
        """{"role", "content"} as chat templates read them (OpenAI's "developer" is the system turn)."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="max_tokens' newer name")


class EmbeddingRequest(OpenAIRequest):
    input: Annotated[Text, Field(min_length=1)] | Annotated[list[Annotated[Text, Field(min_length=1)]],
                                                             Field(min_length=1, max_length=MAX_TEXTS)]
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 bytes")
    dimensions: int | None = Field(None, ge=1, le=65_536, description="must be the model's own, if given")

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error (4xx) or server_error")
    param: str | None = Field(description="the request field at fault, where there is one")
    code: str | None


class ErrorBody(BaseModel):
    """The body of every 4xx answer on OpenAI's paths."""

    error: ErrorDetail


# What OpenAI's routes answer besides 200, in the OpenAPI schema.
OPENAI_ERRORS: dict = {status: {"model": ErrorBody, "description": why} for status, why in [
    (400, "A field is not valid (`param` names it), or the model cannot do this"),
    (404, "No such model is being served"),
    (413, "The body is over the size limit"),
]}


class OpenAIError(Exception):
    """An answer in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def pick_model(pick: Callable[[str | None], Any], name: str):
    """A task route's `pick` with OpenAI's errors: 404 `model_not_found`, or 400 when the model is of
    another task (a classifier named on /v1/completions), `param` "model" either way."""
    try:
        return pick(name)
    except HTTPException as err:
        code = "model_not_found" if err.status_code == 404 else "model_not_supported"
        raise OpenAIError(404 if err.status_code == 404 else 400, str(err.detail), "model", code) from None


def new_id(prefix: str) -> str:
    """`cmpl-…`, `chatcmpl-…`: unique per response, as OpenAI's are."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(chunk: dict) -> str:
    """One server-sent event as OpenAI streams them (`data: {json}`; the stream ends with `DONE`)."""
    return f"data: {json.dumps(chunk)}\n\n"


DONE = "data: [DONE]\n\n"
