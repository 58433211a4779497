"""Continuous batching of generations (`folio.tasks.lm.batching`, `folio.decoding.batching`): a request's text in a
batch is its text alone (greedy and seeded sampling) for every causal LM family; requests join mid-stream, leave
when cancelled (freeing their row), stop at their own stop strings; and through a real server on loopback."""

from __future__ import annotations

import json
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from folio.decoding.batching import ContinuousBatcher, Sequence
from folio.models.gpt import GPT, GPTConfig
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.runtime import FasterThreads
from folio.tasks.lm import LanguageModel
from folio.tasks.lm.batching import BatchedGenerator
from folio.tokenizers import CharTokenizer
from folio.training.checkpoint import save_checkpoint

VOCAB = CharTokenizer("\n abcdefghijklmnopqrstuvwxyz.,:")
WAIT = 60  # seconds: a generous bound on a shared machine; the tests wait on their items, never sleep

GREEDY = {"top_k": 1}
SAMPLED = {"temperature": 0.8, "top_k": 12, "top_p": 0.9, "seed": 5}
REQUESTS = [("the cat:", 30, GREEDY), ("a", 25, SAMPLED), ("one more prompt, longer", 20, {**SAMPLED, "seed": 9}),
            ("be", 35, {"temperature": 1.3, "seed": 1})]


def _char_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind in ("gru", "lstm"):
        return RNNLanguageModel(RNNLMConfig(len(VOCAB), kind, layers=2, hidden=32, dropout=0.0))
    model = GPT(GPTConfig(vocab_size=len(VOCAB), layers=2, heads=2, hidden=32, context=96, dropout=0.0, positions=kind))
    with torch.no_grad():  # far from uniform logits, so that greedy and sampled texts vary
        for param in model.parameters():
            param.mul_(4)
    return model


@pytest.fixture(scope="module")
def tiny_llama_lm(tmp_path_factory):
    pytest.importorskip("gguf")
    from tests.helpers.llama import tiny_llama, write_gguf

    return LanguageModel.from_pretrained(write_gguf(tmp_path_factory.mktemp("batching") / "tiny.gguf", tiny_llama()))


@pytest.fixture(params=["gru", "lstm", "learned", "rope", "llama"])
def lm(request):
    if request.param == "llama":
        return request.getfixturevalue("tiny_llama_lm")
    return LanguageModel(_char_model(request.param).eval(), VOCAB)


def _solo(lm: LanguageModel, prompt: str, max_new_tokens: int, options: dict) -> str:
    return lm.generate(prompt, max_new_tokens, **options)[len(prompt) :]


class Recorder:
    """Submits requests and records every item they hand over, in the order the batcher's thread gave them."""

    def __init__(self, generator: BatchedGenerator):
        self.generator, self.events, self.ended = generator, [], queue.Queue()
        self.sequences = {}

    def submit(self, name: str, prompt: str, max_new_tokens: int, options: dict, then=None):
        """Start request `name`; `then(count)` runs (in the batcher's thread) after each of its pieces."""
        count = [0]

        def deliver(item):
            self.events.append((name, item))
            if isinstance(item, BaseException) or item[1] is not None:
                self.ended.put(name)
            elif then is not None:
                count[0] += 1
                then(count[0])

        self.sequences[name] = self.generator.submit(prompt, deliver, max_new_tokens=max_new_tokens, **options)

    def wait(self, count: int) -> None:
        for _ in range(count):
            self.ended.get(timeout=WAIT)

    def text(self, name: str) -> str:
        return "".join(item[0] for who, item in self.events if who == name)

    def reason(self, name: str) -> str:
        return next(item[1] for who, item in self.events if who == name and item[1] is not None)

    def index(self, name: str, first: bool = True) -> int:
        found = [i for i, (who, _) in enumerate(self.events) if who == name]
        return found[0] if first else found[-1]


def _count_prompts_read_together(model: torch.nn.Module, monkeypatch) -> list[int]:
    """The number of prompts of each call of `model.read_prompts` from now on (a Transformer's; none: [])."""
    counts = []
    read_prompts = getattr(model, "read_prompts", None)
    if read_prompts is not None:
        def counted(prompts):
            counts.append(len(prompts))
            return read_prompts(prompts)

        monkeypatch.setattr(model, "read_prompts", counted)
    return counts


def test_batched_text_equals_solo_text_with_requests_joining_mid_stream(lm, monkeypatch):
    together = _count_prompts_read_together(lm.model, monkeypatch)
    recorder = Recorder(BatchedGenerator(lm, max_batch=8))
    prompts = REQUESTS
    late = prompts[3]

    def join_others(count):  # after request 0's second piece: two more join, and the last after their third
        if count == 2:
            recorder.submit("r1", *prompts[1])
            recorder.submit("r2", *prompts[2], then=lambda c: c == 3 and recorder.submit("r3", *late))

    recorder.submit("r0", *prompts[0], then=join_others)
    recorder.wait(4)
    for i, (prompt, max_new_tokens, options) in enumerate(prompts):
        assert recorder.text(f"r{i}") == _solo(lm, prompt, max_new_tokens, options), (i, options)
    # they did share the batch: each joiner began before the request it joined ended
    assert recorder.index("r1") < recorder.index("r0", first=False)
    assert recorder.index("r3") < recorder.index("r2", first=False)
    assert {recorder.reason(f"r{i}") for i in range(4)} <= {"length", "stop"}
    # r1 and r2 joined at one step: a Transformer read their prompts in one pass
    assert together == ([2] if hasattr(lm.model, "read_prompts") else [])


def test_a_cancelled_request_frees_its_row_for_a_waiting_one():
    lm = LanguageModel(_char_model("gru").eval(), VOCAB)
    recorder = Recorder(BatchedGenerator(lm, max_batch=1))

    def cancel_at_third(count):
        if count == 1:
            recorder.submit("waiting", "the", 20, GREEDY)  # no free row: it waits
        if count == 3:
            recorder.sequences["long"].cancel()

    recorder.submit("long", "a", 100_000, SAMPLED, then=cancel_at_third)
    recorder.wait(2)
    assert recorder.reason("long") == "cancelled" and len(recorder.text("long")) <= 4
    assert recorder.index("waiting") > recorder.index("long", first=False)  # it started once the row was free
    assert recorder.text("waiting") == _solo(lm, "the", 20, GREEDY) and recorder.reason("waiting") == "length"


def test_a_lone_rows_steps_are_timed_on_one_thread_and_on_all_and_only_steps_that_ran_the_model():
    """A `FasterThreads` for one row (what `BatchedGenerator` gives a large model): the steps alternate between
    one thread and two until each ran three, and the step where the row ends (no model call) is not timed."""
    lm = LanguageModel(_char_model("rope").eval(), VOCAB)
    lone, seen, ended = FasterThreads(2), [], threading.Event()
    batcher = ContinuousBatcher(lm.model, threads=lambda rows: lone if rows == 1 else None)

    def on_token(token: int) -> bool:  # in the batcher's thread, on the setting of the step being sampled
        seen.append(torch.get_num_threads())
        return False

    try:
        batcher.submit(Sequence(torch.tensor(VOCAB.encode("the")), 10, on_token, lambda reason, error: ended.set(),
                                top_k=1))
        assert ended.wait(WAIT)
    finally:
        batcher.close()
    assert seen[:6] == [1, 2, 1, 2, 1, 2] and len(seen) == 10
    assert sum(lone.runs.values()) == 9 and min(lone.runs.values()) >= 3  # ten tokens, nine model steps


def test_each_request_stops_at_its_own_stop_strings():
    lm = LanguageModel(_char_model("rope").eval(), VOCAB)
    generator = BatchedGenerator(lm)
    full = _solo(lm, "the", 40, GREEDY)
    stop_a, stop_b = full[5:7], full[12:14]  # strings the greedy text is known to hold
    requests = [dict(stop=[stop_a]), dict(stop=[stop_b]), dict(stop=["never seen"])]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda o: list(generator.stream("the", max_new_tokens=40, **GREEDY, **o)), requests))
    texts = ["".join(piece for piece, _ in answer) for answer in answers]
    assert texts == [_solo(lm, "the", 40, {**GREEDY, **o}) for o in requests]
    assert texts[0] == full[: full.index(stop_a)] and texts[1] == full[: full.index(stop_b)] and texts[2] == full
    assert [answer[-1][1] for answer in answers] == ["stop", "stop", "length"]


def test_a_request_past_the_context_is_generated_alone_with_the_sliding_window():
    lm = LanguageModel(_char_model("learned").eval(), VOCAB)  # context 96
    generator = BatchedGenerator(lm)
    with ThreadPoolExecutor(2) as pool:
        long, short = pool.map(lambda n: generator.generate("the cat", max_new_tokens=n, **GREEDY), [150, 30])
    assert long == _solo(lm, "the cat", 150, GREEDY) and short == _solo(lm, "the cat", 30, GREEDY)


@pytest.mark.parametrize("kind", ["gru", "rope"])
def test_a_failing_prompt_ends_that_request_alone(kind, monkeypatch):
    from folio.decoding.batching import Sequence

    lm = LanguageModel(_char_model(kind).eval(), VOCAB)
    together = _count_prompts_read_together(lm.model, monkeypatch)
    recorder = Recorder(BatchedGenerator(lm))
    errors = queue.Queue()
    # ids out of the vocabulary's range: the model itself fails on this prompt, which joins the running batch at
    # the same step as a good one (a Transformer tries them together, then one by one)
    broken = Sequence(torch.tensor([len(VOCAB) + 5]), 5, on_token=lambda t: False, on_end=lambda _, err: errors.put(err))

    def join_two(count):
        if count == 2:
            recorder.submit("joined", "a cat", 20, GREEDY)
            recorder.generator.batched.submit(broken)

    recorder.submit("fine", "the", 30, SAMPLED, then=join_two)
    recorder.wait(2)
    assert isinstance(errors.get(timeout=WAIT), (RuntimeError, IndexError)) and broken.finish_reason == "error"
    assert recorder.text("fine") == _solo(lm, "the", 30, SAMPLED) and recorder.reason("fine") == "length"
    assert recorder.text("joined") == _solo(lm, "a cat", 20, GREEDY) and recorder.reason("joined") == "length"
    assert together == ([] if kind == "gru" else [2])


def test_stream_text_yields_pieces_then_the_finish_reason():
    pytest.importorskip("fastapi")
    import asyncio

    from folio.serve.api import ServedModel
    from folio.tasks.lm.serve import stream_text

    lm = LanguageModel(_char_model("gru").eval(), VOCAB)
    served = ServedModel("gru", "lm", "-", lm)
    full = _solo(lm, "the", 30, GREEDY)

    async def collect(options):
        return [item async for item in stream_text(served, "the", options, None)]

    async def both():  # concurrently, in one batch
        return await asyncio.gather(collect({"max_new_tokens": 30, "top_k": 1, "seed": None}),
                                    collect({"max_new_tokens": 30, "top_k": 1, "stop": [full[10:12]]}))

    length, stopped = asyncio.run(both())
    assert "".join(piece for piece, _ in length) == full and stopped[-1][1] == "stop"
    assert [reason for _, reason in length] == [None] * (len(length) - 1) + ["length"]
    assert "".join(piece for piece, _ in stopped) == full[: full.index(full[10:12])]


@pytest.fixture(scope="module")
def served_gpt(tmp_path_factory):
    """A running server on loopback with a fresh rotary GPT, and the same model loaded here."""
    httpx = pytest.importorskip("httpx")
    uvicorn = pytest.importorskip("uvicorn")
    from folio.serve.app import create_app
    from tests.helpers import free_port, wait_until_healthy

    directory = tmp_path_factory.mktemp("batching") / "gpt"
    model = _char_model("rope")
    save_checkpoint(directory, model, {"task": "lm", "model": model.config.to_dict()}, write_extras=VOCAB.save_pretrained)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app([str(directory)]), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    assert wait_until_healthy(base, seconds=WAIT)
    yield base, LanguageModel.from_pretrained(directory), httpx
    server.should_exit = True
    thread.join(timeout=10)


def test_four_concurrent_streams_through_the_server_give_their_solo_texts(served_gpt):
    base, lm, httpx = served_gpt
    bodies = [{"prompt": p, "max_new_tokens": n, **o} for p, n, o in REQUESTS]

    def stream(body):
        events = []
        with httpx.stream("POST", base + "/v1/generate", json=body, timeout=WAIT) as response:
            event = "message"
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((event, json.loads(line[5:])))
                    event = "message"
        return events

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(stream, bodies))
    for (prompt, max_new_tokens, options), events in zip(REQUESTS, answers, strict=True):
        text = "".join(data["text"] for kind, data in events if kind == "message")
        assert text == _solo(lm, prompt, max_new_tokens, options)
        assert events[-1] == ("done", {"characters": len(text)})
    whole = httpx.post(base + "/v1/generate", json={**bodies[1], "stream": False}, timeout=WAIT).json()
    assert whole == {"model": "gpt", "text": _solo(lm, *REQUESTS[1][:2], REQUESTS[1][2])}
