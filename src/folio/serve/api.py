"""What a task's HTTP routes (`add_routes(app, pick)` in its `serve.py`) build on, published by the host
(`folio.serve.app`) for the tasks to import: the served model, `Pick` (a route's way to its model), `ERRORS`
(the error answers every model route documents), `Batcher` (requests that arrive together, answered in one
batch), and `PageTab` (a task's tab on the web page at `/`). Nothing here imports a task or the host.

OpenAI's protocol (its request bodies, response shapes and errors) is the other module task routes import:
`folio.serve.openai`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from folio.serve.schemas import ErrorResponse

# What the model routes answer besides 200, in the OpenAPI schema: every error body is an `ErrorResponse`, its
# `detail` one line (validation errors, the model's own checks, `pick`, `BodyLimit` and `Guard` alike).
ERRORS: dict = {status: {"model": ErrorResponse, "description": why} for status, why in [
    (400, "The body cannot be parsed (not UTF-8, or a broken form)"),
    (404, "No such model, or none of this task, is being served"),
    (413, "The body is over the size limit"),
    (422, "A field, or the input itself, is not valid (the message names it)"),
    (500, "An unexpected error (a bug: the server's log has the details)"),
]}


@dataclass
class ServedModel:
    name: str
    task: str  # a registered task's name (folio.tasks.TASKS)
    directory: str
    model: object  # the task's inference object (LanguageModel, TextClassifier, ...)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batcher: Batcher | None = None
    created: int = field(default_factory=lambda: int(time.time()))  # when it was loaded
    engine: object | None = None  # a language model's generations, batched (folio.tasks.lm.batching), once started

    def info(self) -> dict:
        """The model as OpenAI lists one (`id`, `object`, `created`, `owned_by`), with Folio's own fields."""
        config = getattr(self.model, "config", {}) or {}
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "folio", "task": self.task,
                "directory": self.directory, "model": config.get("model", {}), "labels": getattr(self.model, "labels", None)}


# A task route's way to its model: pick(name) → the served model of that name (which must be of the task), or
# the first served model of the task when name is None; an HTTPException (404/422) otherwise.
Pick = Callable[[str | None], ServedModel]


class Batcher:
    """Merges the texts of requests that arrive within `max_wait` seconds into one call of `fn`.

    `await submit(texts)` returns `fn(texts)`'s results for those texts; `fn` runs in a worker thread
    on up to `max_batch` texts at a time, one call after another.
    """

    def __init__(self, fn, max_batch: int = 128, max_wait: float = 0.005):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    async def submit(self, texts: list[str]) -> list:
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0][0])
            deadline = time.perf_counter() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job[0])
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                results = await asyncio.to_thread(self.fn, texts)
            except Exception as err:  # every waiting request gets the error
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for job_texts, future in jobs:
                if not future.done():
                    future.set_result(results[start : start + len(job_texts)])
                start += len(job_texts)


@dataclass(frozen=True)
class PageTab:
    """A task's tab on the web page at `/` (a task's `page` hook names one; `folio.serve.page` puts every
    registered task's tab on the page, in the registry's order, the first one open).

    The page fills the `<select id="{select}">` of `html` with the served models of the task, and runs `script`
    after its own helpers: `$(id)`, `post(path, body)` (a JSON POST that throws an `Error` carrying the server's
    one-line `detail`) and `fail(element, error)` (shows the error in the element). Ids in `html` start with a
    prefix of the tab's own (`gen-`, `cls-`), as every tab shares one document.
    """

    id: str  # the section's id and its nav button's data-tab: "generate"
    title: str  # the nav button's text
    select: str  # the id of the <select> in `html` that lists the task's served models
    html: str  # the section's content
    script: str = ""  # JavaScript, run once on load
    style: str = ""  # CSS rules for what `html` holds
