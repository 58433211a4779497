"""`folio lm`'s generations served together: a language model's concurrent prompts share each step of the model
(continuous batching, `folio.decoding.batching`), each with its own options, stop strings and seeded generator.

    >>> generator = BatchedGenerator(LanguageModel.from_pretrained("smollm2"))          # doctest: +SKIP
    >>> "".join(piece for piece, _ in generator.stream("The sky is", max_new_tokens=20, top_k=1))  # doctest: +SKIP

A request's text is the text `LanguageModel.stream` gives for it alone, whatever else shares the batch: the same
tokens where the batched product rounds like the single one (greedy decoding, or sampling with the same seed).

Past the context: the rows of a batch cannot slide a Transformer's window each on its own (they sit at different
positions), so a request whose prompt and `max_new_tokens` do not fit in the model's context is generated alone
(one such request at a time, beside the batch), with the sliding window of `LanguageModel.stream`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import torch

from folio.decoding.batching import ContinuousBatcher, Sequence
from folio.decoding.sampling import StopStrings, check_sampling_options
from folio.errors import ConfigError
from folio.runtime import FasterThreads
from folio.tasks.lm.inference import Detokenizer, LanguageModel, decode_threads, model_weights, times_one_stream

# What a generation hands over, piece by piece, in the batcher's thread: (new text, None), then
# (the last text, finish reason: "stop", "length" or "cancelled"); or the error that ended it.
Deliver = Callable[[tuple[str, str | None] | BaseException], None]


class BatchedGenerator:
    """One language model's generations, batched: at most `max_batch` at a time share a step, later ones wait."""

    def __init__(self, lm: LanguageModel, max_batch: int = 16):
        self.lm = lm
        weights = model_weights(lm.model)
        lone = FasterThreads(torch.get_num_threads()) if times_one_stream(lm.model, weights) else None

        def threads(rows: int) -> int | FasterThreads | None:  # a lone row of a large model: timed, as `stream`
            return lone if rows == 1 and lone is not None else decode_threads(lm.model, weights)

        self.batched = ContinuousBatcher(lm.model, max_batch, threads)
        self.alone = ContinuousBatcher(lm.model, 1, threads)  # past the context (see the module's note)
        self.context: int | None = getattr(lm.model.config, "context", None)  # a recurrent model has no limit

    def submit(self, prompt: str, deliver: Deliver, max_new_tokens: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop: list[str] | None = None, stop_at_eos: bool = True, stops: tuple[threading.Event, ...] = ()) -> Sequence:
        """Start generating after `prompt` (`LanguageModel.stream`'s options), handing the text to `deliver` as
        it comes (see `Deliver`); any of `stops` set ends it at the next step. Returns the sequence (to cancel).
        Bad options or an unreadable prompt raise `ConfigError` here."""
        check_sampling_options(temperature, top_k, top_p)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        ids = self.lm._prompt_ids(prompt)  # (P,)
        generator = torch.Generator(device=ids.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        detokenizer, stopper = Detokenizer(self.lm.vocab, ids.tolist()), StopStrings(stop)
        eos = self.lm.vocab.eos_id if stop_at_eos else None

        def on_token(token: int) -> bool:  # as LanguageModel.stream reads each token
            if token == eos:  # the end of the text: what the stop strings held back is all it has left
                piece, stopper.done = stopper.flush(), True
            else:
                piece = stopper.feed(detokenizer.feed(token))
            if piece:
                deliver((piece, None))
            return stopper.done

        def on_end(reason: str, error: BaseException | None) -> None:
            deliver(error if error is not None else (stopper.flush() if reason == "length" else "", reason))

        sequence = Sequence(ids, max_new_tokens, on_token, on_end, temperature, top_k, top_p, generator, stops)
        fits = self.context is None or len(ids) + max_new_tokens - 1 <= self.context  # the last token is not read
        return (self.batched if fits else self.alone).submit(sequence)

    def stream(self, prompt: str, **options) -> Iterator[tuple[str, str | None]]:
        """`submit` as an iterator of (piece, None) ... (last piece, finish reason), for callers with a thread of
        their own; leaving the loop early cancels the generation."""
        items: queue.Queue = queue.Queue()
        sequence = self.submit(prompt, items.put, **options)
        try:
            while True:
                item = items.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item[1] is not None:
                    return
        finally:
            sequence.cancel()

    def generate(self, prompt: str, **options) -> str:
        """The new text after `prompt` (not the prompt itself), generated in the batch."""
        return "".join(piece for piece, _ in self.stream(prompt, **options))

    def close(self) -> None:
        self.batched.close()
        self.alone.close()


__all__ = ["BatchedGenerator"]
