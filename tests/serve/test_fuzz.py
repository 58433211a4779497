"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis): every operation gets generated
requests, valid and invalid; none may get a 5xx or an answer its schema does not describe, and the
server stays up and keeps answering."""

import base64
import collections
import io

import pytest

schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import FILLER, NEGATIVE, NUMBERS, PATTERN, POSITIVE  # noqa: E402

# slow: every test here needs the session's four trained models (tests/serve/conftest.py)
pytestmark = pytest.mark.slow

OPERATIONS = [("GET", "/healthz"), ("GET", "/v1/models"), ("GET", "/"), ("POST", "/v1/generate"),
              ("POST", "/v1/classify"), ("POST", "/v1/translate"), ("POST", "/v1/caption"),
              ("GET", "/v1/models/{model_id}"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
              ("POST", "/v1/embeddings")]
# An operation without parameters has no invalid request to make: negative cases only for the POSTs.
RUNS = [(method, path, mode) for method, path in OPERATIONS
        for mode in [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if method == "POST" else [])]
# No 5xx; the status code, content type and body each as the schema documents them (the SSE stream of
# /v1/generate included: its events are checked against the `itemSchema` the route declares); invalid input
# refused with a 4xx.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


def _words(vocabulary: list[str], most: int):
    return st.lists(st.sampled_from(vocabulary), min_size=1, max_size=most).map(" ".join)


@st.composite
def _image_files(draw) -> bytes:
    """A small image file in a mode and format the captioner must convert (or refuse with a 422)."""
    from PIL import Image

    mode, kind = draw(st.sampled_from([("RGB", "JPEG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("L", "JPEG"),
                                        ("P", "PNG"), ("1", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG")]))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    noise = draw(st.randoms(use_true_random=False)).randbytes(width * height)
    out = io.BytesIO()
    Image.frombytes("L", (width, height), noise).convert(mode).save(out, kind)
    return out.getvalue()


# Schema-valid values the served models know (their vocabularies, real image files). Most of what the schema
# alone allows stops at the first check (a character the LM has never seen, bytes that are no image): these
# get half the positive cases past it, to the models and every decoding option. Generation is kept to a few
# dozen tokens so the run stays short; the server's own limit (4,096) is still what the other cases see.
KNOWN_INPUTS = {
    "/v1/generate": st.fixed_dictionaries({"prompt": st.text(sorted(set(PATTERN)), min_size=1, max_size=40),
                                           "max_new_tokens": st.integers(1, 48)}),
    "/v1/classify": st.fixed_dictionaries({"texts": st.lists(_words(POSITIVE + NEGATIVE + FILLER, 20), min_size=1,
                                                             max_size=4)}),
    "/v1/translate": st.integers(1, 6).flatmap(lambda beam_size: st.fixed_dictionaries({
        "texts": st.lists(_words(list(NUMBERS), 5), min_size=1, max_size=4),  # 5 words: its longest source
        "beam_size": st.just(beam_size), "n_best": st.integers(1, beam_size)})),
    "/v1/caption": st.fixed_dictionaries({"images": st.lists(_image_files(), min_size=1, max_size=3)}),
}


def _with_known_inputs(case, known: dict | None):
    if known is None or not isinstance(case.body, dict):
        return case
    case.body.pop("model", None)  # a made-up name only gets a 404; without one, the model of the task answers
    images = known.get("images")
    if images is not None and not (case.media_type or "").startswith("multipart/"):
        known = {**known, "images": [base64.b64encode(data).decode() for data in images]}
    case.body.update(known)
    return case


@pytest.fixture(scope="module")
def api_schema(server):
    config = schemathesis.Config.from_dict({
        # 413: the body is over the server's size limit, which a field's maxLength can exceed long before
        # it is reached itself (256 texts of 20,000 characters).
        "checks": {"negative_data_rejection": {"expected-statuses": ["400", "404", "413", "422"]}},
        "output": {"truncation": {"max-payload-size": 300}},  # reports of 60 kB bodies, cut
    })  # given explicitly: a schemathesis.toml lying around must not change what runs
    return schemathesis.openapi.from_url(server + "/openapi.json", config=config)


def test_schema_lists_every_operation(api_schema):
    listed = {(result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)  # a new route gets fuzzed too: add it to OPERATIONS


@pytest.mark.parametrize(("method", "path", "mode"), RUNS, ids=lambda value: getattr(value, "value", value))
def test_operation_survives_fuzzing(api_schema, server, method, path, mode):
    operation = api_schema[path][method]
    cases = operation.as_strategy(generation_mode=mode)
    if mode == GenerationMode.POSITIVE and path in KNOWN_INPUTS:
        cases = st.builds(_with_known_inputs, cases, st.none() | KNOWN_INPUTS[path])
    statuses = collections.Counter()

    # Derandomized: the same requests on every run, so a failure here is one to reproduce, not a flake.
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=cases)
    def fuzz(case):
        response = case.call(base_url=server, timeout=60)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    fuzz()
    if mode == GenerationMode.POSITIVE and path in KNOWN_INPUTS:
        assert statuses[200] >= 5, f"the models answered too few requests to have been fuzzed: {dict(statuses)}"
    health = httpx.get(server + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
