"""A real uvicorn server on loopback serving four tiny models (trained once per session), shared by the
HTTP API tests and the browser tests of the page."""

import json

import pytest

from tests.helpers import PATTERN, number_pairs, serving, synthetic_reviews


def _train_models(root):
    from folio.tasks.caption import CaptionTrainOptions
    from folio.tasks.caption import DataSpec as CaptionData
    from folio.tasks.caption import train as train_captioner
    from folio.tasks.classify import ClassifyTrainOptions
    from folio.tasks.classify import train as train_classifier
    from folio.tasks.lm import LMTrainOptions
    from folio.tasks.lm import train as train_lm
    from folio.tasks.translate import DataSpec, TranslateTrainOptions
    from folio.tasks.translate import train as train_translator
    from folio.training.config import TrainConfig

    def steps(n, lr):
        return TrainConfig(lr=lr, max_steps=n, warmup_steps=10, eval_every=n, save_every=10_000, log_every=n)

    corpus = root / "corpus.txt"
    corpus.write_text(PATTERN * 100)
    train_lm(LMTrainOptions(corpus=str(corpus), out=str(root / "lm"), model={"hidden": 32}, seq_len=24, batch_size=8,
                            train=steps(150, 1e-2), device="cpu", progress=False))
    reviews = root / "reviews.jsonl"
    reviews.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(400, 0)))
    train_classifier(ClassifyTrainOptions(data=str(reviews), out=str(root / "imdb"), vocab_size=50, oov_buckets=8,
                                          max_len=100, model={"hidden": 16, "embedding_dim": 16, "dropout": 0.0},
                                          batch_size=16, train=steps(120, 1e-2), device="cpu", progress=False))
    pairs = root / "numbers.txt"
    pairs.write_text(number_pairs(2000, 0), encoding="utf-8")
    train_translator(TranslateTrainOptions(data=DataSpec(data=str(pairs)), out=str(root / "numbers"), tokenizer="word",
                                           model={"hidden": 48, "embedding_dim": 24, "attention": "bahdanau", "dropout": 0.0},
                                           batch_size=32, train=steps(200, 1e-2), device="cpu", progress=False))
    train_captioner(CaptionTrainOptions(data=CaptionData(image_size=32, scenes_train=256, scenes_valid=16, scenes_objects=(1, 1)),
                                        out=str(root / "shapes"), model={"channels": (8, 8), "hidden": 16, "feature_dim": 8,
                                                                         "attention_dim": 8, "embedding_dim": 8},
                                        batch_size=32, train=steps(20, 1e-2), device="cpu", progress=False))


@pytest.fixture(scope="session")
def served_models(tmp_path_factory):
    """A folder with the tiny trained models `lm`, `imdb`, `numbers` and `shapes`."""
    root = tmp_path_factory.mktemp("serve")
    _train_models(root)
    return root


@pytest.fixture(scope="session")
def served_app(served_models):
    """The application `server` runs (its routes, its models in `.state.models`)."""
    pytest.importorskip("fastapi")
    from folio.serve.app import create_app

    root = served_models
    return create_app([str(root / "lm"), str(root / "imdb"), f"numbers={root / 'numbers'}", str(root / "shapes")],
                      max_body_bytes=64_000)


@pytest.fixture(scope="session")
def server(served_app):
    """The base URL of a running server with models `lm`, `imdb`, `numbers` and `shapes`."""
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    with serving(served_app) as base:
        yield base
