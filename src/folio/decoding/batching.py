"""Continuous batching: concurrent generations share each step of one model.

A `ContinuousBatcher` owns a model and one worker thread. A `Sequence` submitted from any thread joins the
running batch at the next step (its prompt read, together with the others joining at that step where the model
can, its state then merged into the batch's) and leaves it
when it ends: its `on_token` callback says it is done (a stop string, the end of text), it reached
`max_new_tokens`, or it was cancelled (a client that went away, a server shutting down): its row is freed
before the next step. Each sequence samples with its own settings and its own generator, one row at a time,
so what it writes does not depend on what else shares the batch (up to the rounding of a batched product).

The model's side, shared by Folio's causal language models (the char-RNN, GPT, Llama):

    model(ids (B, T), state, last_only=True) -> (logits (B, 1, V), state)   # state None: a prompt
    model.merge_states([state, ...]) -> one state with their rows, in order
    model.select_state(state, rows (R,)) -> the state of those rows
    model.read_prompts([ids (P_i,), ...]) -> (logits (B, V) of each prompt's last position, state)   # optional

`read_prompts` (a Transformer's: one forward pass over the prompts, padded) gives the state `merge_states` would
make of the prompts read one by one. Without it, or if it fails (a prompt the model refuses), the prompts are
read one at a time, so that a bad prompt fails its own request alone.

    >>> batcher = ContinuousBatcher(model)                                              # doctest: +SKIP
    >>> batcher.submit(Sequence(ids, 20, on_token=print, on_end=lambda reason, err: None))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from folio.decoding.sampling import check_sampling_options, sample_next
from folio.errors import ConfigError
from folio.nn import kernels
from folio.runtime import FasterThreads


@dataclass(eq=False)
class Sequence:
    """One generation: its prompt, sampling settings and callbacks (called in the batcher's thread).

    `on_token(token)` gets each new token and returns True when the sequence is finished (a stop string, the
    end of text); `on_end(reason, error)` is called once at the end, with reason "stop" (finished so),
    "length" (`max_new_tokens` reached), "cancelled" (`cancel()`, or one of `stops` set) or "error".
    """

    ids: Tensor  # (P,) the prompt's token ids, on the model's device
    max_new_tokens: int
    on_token: Callable[[int], bool]
    on_end: Callable[[str, BaseException | None], None]
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None
    stops: tuple[threading.Event, ...] = ()  # any of them set: cancelled at the next step (e.g. a server's shutdown)
    produced: int = 0  # tokens so far
    finish_reason: str | None = None  # set once it ended
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def end(self, reason: str, error: BaseException | None = None) -> None:
        """Record the end and call `on_end`, once whatever happens after."""
        if self.finish_reason is None:
            self.finish_reason = reason
            self.on_end(reason, error)

    def cancel(self) -> None:
        """End this sequence at the batcher's next step (from any thread)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or any(stop.is_set() for stop in self.stops)


class ContinuousBatcher:
    """Generates the submitted sequences together, one token of each per step of `model`, with at most
    `max_batch` rows (later sequences wait for a free row, in arrival order). `threads(rows)`: the intra-op
    threads for a step of that many rows (None: as they are), or a `FasterThreads` that times its candidates on
    those steps; prompts are read on the worker's own setting."""

    def __init__(self, model: torch.nn.Module, max_batch: int = 16,
                 threads: Callable[[int], int | FasterThreads | None] | None = None):
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.max_batch = model, max_batch
        self._threads = threads or (lambda rows: None)
        self._pending: deque[Sequence] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None

    def submit(self, sequence: Sequence) -> Sequence:
        """Queue `sequence` for the next step; returns it (to `cancel()`). The calling thread's OpenMP workers
        are let go (`kernels.release_workers`): the batcher's thread does the model's parallel work from here."""
        check_sampling_options(sequence.temperature, sequence.top_k, sequence.top_p)
        if sequence.max_new_tokens < 1 or sequence.ids.dim() != 1 or not len(sequence.ids):
            raise ConfigError(f"a sequence needs a prompt of at least one token and max_new_tokens >= 1, got "
                              f"{tuple(sequence.ids.shape)} and {sequence.max_new_tokens}")
        with self._wake:
            if self._closed:
                raise ConfigError("this batcher is closed")
            self._pending.append(sequence)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="folio-batcher", daemon=True)
                self._worker.start()
            self._wake.notify()
        kernels.release_workers()
        return sequence

    def close(self) -> None:
        """Cancel every sequence and stop the worker thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._worker is not None:
            self._worker.join()

    def _run(self) -> None:
        base_threads = torch.get_num_threads()  # (the intra-op setting is the worker thread's own)
        rows: list[Sequence] = []
        state, logits = None, None  # the batch's state, and each row's next-token logits (B, V)
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._pending and not rows and not self._closed:
                        _use_threads(base_threads)
                        kernels.release_workers()  # idle: its OpenMP workers would slow other threads' regions
                        self._wake.wait()
                    if self._closed:
                        for row in [*rows, *self._pending]:
                            row.end("cancelled", None)
                        return
                    joining = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch - len(rows)))]
                try:
                    if joining:  # reading prompts is matrix work over many positions: every thread, as `stream` does
                        _use_threads(base_threads)
                        rows, state, logits = self._join(rows, state, logits, joining)
                    setting = self._threads(len(rows))
                    timed = setting if isinstance(setting, FasterThreads) else None
                    count = timed.count() if timed else setting or base_threads
                    _use_threads(count)
                    start = time.perf_counter()
                    rows, state, logits = self._step(rows, state, logits)
                    if timed and rows:  # (a step whose rows all ended ran no model: not timed)
                        timed.record(count, time.perf_counter() - start)
                except Exception as err:  # noqa: BLE001 (every sequence of the batch is told; the batcher goes on)
                    for row in [*rows, *joining]:  # (end() is once: those that ended already keep their reason)
                        row.end("error", err)
                    rows, state, logits = [], None, None

    def _join(self, rows: list[Sequence], state, logits: Tensor | None, joining: list[Sequence]):
        """The batch with `joining` read and appended; one whose prompt fails ends with that error alone."""
        states, firsts = [] if state is None else [state], [] if logits is None else [logits]
        live = []
        for sequence in joining:
            if sequence.cancelled:
                sequence.end("cancelled", None)
            else:
                live.append(sequence)
        for read, read_logits, read_state in self._read(live):
            rows = [*rows, *read]
            states.append(read_state)
            firsts.append(read_logits)  # (len(read), V)
        if len(states) > 1:
            state = self.model.merge_states(states)
        elif states:
            state = states[0]
        return rows, state, (torch.cat(firsts) if firsts else None)

    def _read(self, sequences: list[Sequence]) -> list[tuple[list[Sequence], Tensor, object]]:
        """The prompts of `sequences` read: (sequences, their last-position logits (n, V), their state) for all
        of them at once where the model reads prompts together, else for each one; a sequence whose prompt the
        model refuses ends with that error and is left out."""
        read_prompts = getattr(self.model, "read_prompts", None)
        if read_prompts is not None and len(sequences) > 1:
            try:
                return [(sequences, *read_prompts([sequence.ids for sequence in sequences]))]
            except Exception:  # noqa: BLE001 (read them one by one below: only the refused prompt's request fails)
                pass
        read = []
        for sequence in sequences:
            try:
                prompt_logits, prompt_state = self.model(sequence.ids.unsqueeze(0), None, last_only=True)
            except Exception as err:  # noqa: BLE001 (a prompt the model refuses: that request's error)
                sequence.end("error", err)
                continue
            read.append(([sequence], prompt_logits[:, -1], prompt_state))  # (1, V)
        return read

    def _step(self, rows: list[Sequence], state, logits: Tensor | None):
        """Sample each row's next token from its logits, hand it over, drop the rows that ended, and run the
        model one step on the others."""
        keep, tokens = [], []
        for i, row in enumerate(rows):
            if row.cancelled:
                row.end("cancelled", None)
                continue
            token = sample_next(logits[i : i + 1], row.temperature, row.top_k, row.top_p, row.generator)  # (1,)
            row.produced += 1
            if row.on_token(int(token)):
                row.end("stop", None)
            elif row.produced >= row.max_new_tokens:
                row.end("length", None)
            else:
                keep.append(i)
                tokens.append(token)
        if not keep:
            return [], None, None
        if len(keep) < len(rows):
            state = self.model.select_state(state, torch.tensor(keep, device=logits.device))
        step_logits, state = self.model(torch.stack(tokens), state, last_only=True)  # (B, 1) → (B, 1, V)
        return [rows[i] for i in keep], state, step_logits[:, -1]


def _use_threads(count: int) -> None:
    if count != torch.get_num_threads():
        torch.set_num_threads(count)


__all__ = ["ContinuousBatcher", "Sequence"]
