"""ELMo end to end through the console script: `folio pretrain train --arch bilm` and its alias `folio lm train --arch bilm` (with and without the character
CNN), `folio lm evaluate` (and `folio pretrain evaluate`) with both directions' perplexities, `folio embed --model BILM_DIR`, and
`folio classify train --features BILM_DIR`."""

from __future__ import annotations

import json
import math
import random

import pytest

from tests.helpers import run_folio as folio
from tests.models.test_bilm import MONEY, RIVER, context_corpus

TRAIN = ("--tokenizer", "word", "--vocab-size", "100", "--oov-buckets", "4", "--layers", "1", "--hidden", "24",
         "--dropout", "0", "--seq-len", "16", "--batch-size", "16", "--lr", "1e-2", "--warmup-steps", "5",
         "--max-steps", "120", "--eval-every", "60", "--log-every", "20", "--max-time", "1e9", "--seed", "0")


@pytest.fixture(scope="module")
def bilms(tmp_path_factory):
    """Two trained biLMs on the river/money corpus: an embedding table trained with a sampled softmax
    ("table") and a char CNN ("chars")."""
    root = tmp_path_factory.mktemp("elmo")
    corpus = root / "corpus.txt"
    corpus.write_text(context_corpus(1500))
    out = {}
    # `folio pretrain train`, and `folio lm train`: its alias
    for name, task, extra in (("table", "lm", ("--softmax-samples", "8")), ("chars", "pretrain", ("--char-cnn",))):
        result = folio(task, "train", "--arch", "bilm", "--corpus", str(corpus), "--out", str(root / name), *TRAIN, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "forward loss" in result.stderr and "backward loss" in result.stderr  # validation reports both
        out[name] = root / name
    return corpus, out


def test_evaluate_reports_both_directions(bilms):
    corpus, models = bilms
    result = folio("lm", "evaluate", "--model", str(models["table"]), "--corpus", str(corpus), "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for direction in ("forward", "backward"):
        assert report[f"{direction}_perplexity"] == pytest.approx(math.exp(report[f"{direction}_loss"]))
        assert report[f"{direction}_perplexity"] < 4.0, report  # a guess would be ~30
    assert report["loss"] == pytest.approx((report["forward_loss"] + report["backward_loss"]) / 2)
    again = folio("pretrain", "evaluate", "--model", str(models["table"]), "--corpus", str(corpus), "--split", "test",
                  "--json")  # `folio lm evaluate` of an encoder is its alias: the same report
    assert again.returncode == 0 and json.loads(again.stdout) == report, again.stderr


def _embed(model, *args) -> list[dict]:
    result = folio("embed", "--model", str(model), *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_embed_gives_one_vector_per_token_and_the_token_layer_ignores_context(bilms):
    _, models = bilms
    texts = (RIVER[0], MONEY[0])
    for layer in ("0", "1", "mix"):
        rows = _embed(models["table"], "--layer", layer, *texts)
        assert [row["text"] for row in rows] == list(texts)
        banks = []
        for row in rows:
            assert len(row["embeddings"]) == len(row["tokens"]) == len(row["text"].split())
            assert {len(v) for v in row["embeddings"]} == {48}  # both directions of 24 units
            banks.append(row["embeddings"][row["tokens"].index("bank")])
        assert (banks[0] == banks[1]) == (layer == "0"), layer  # static at layer 0, contextual above it


def test_a_char_cnn_bilm_gives_unseen_words_their_own_vectors(bilms):
    _, models = bilms
    table, chars = (_embed(models[name], "--layer", "0", "the zebra and the quokka") for name in ("table", "chars"))
    vectors = {name: dict(zip(rows[0]["tokens"], rows[0]["embeddings"], strict=True)) for name, rows in
               (("table", table), ("chars", chars))}
    assert vectors["chars"]["zebra"] != vectors["chars"]["quokka"]
    # the table has four buckets for unknown words; the char CNN needs none of them
    assert vectors["chars"]["zebra"] != vectors["chars"]["the"]


def test_classify_over_frozen_bilm_features_learns(bilms, tmp_path):
    _, models = bilms
    rng = random.Random(5)
    rows = ["text,label"] + [f"{s},{'river' if s in RIVER else 'money'}" for s in
                             (rng.choice(RIVER + MONEY) for _ in range(400))]
    data = tmp_path / "senses.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "clf"
    result = folio("classify", "train", "--data", str(data), "--features", str(models["chars"]), "--out", str(out),
                   "--hidden", "8", "--embedding-dim", "8", "--batch-size", "16", "--lr", "1e-2", "--warmup-steps", "5", "--max-steps", "60",
                   "--eval-every", "30", "--max-time", "1e9", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["valid"]["accuracy"] >= 0.95
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["arch"] == "elmo_classifier" and config["model"]["features"] == str(models["chars"])
    predicted = folio("classify", "predict", "--model", str(out), "the bank approved the loan")
    assert predicted.returncode == 0 and predicted.stdout.split("\t")[0] == "money", predicted.stdout + predicted.stderr
    exported = folio("export", "--model", str(out), "--format", "onnx")  # the char CNN convolves every position there
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads(exported.stdout.splitlines()[-1])["max_abs_diff"] < 1e-4


def test_classify_over_bilm_features_reads_glove_beside_them(bilms, tmp_path):
    """Peters et al.'s task models: GloVe word vectors beside the ELMo mix."""
    _, models = bilms
    data = tmp_path / "senses.csv"
    data.write_text("text,label\n" + "".join(f"{s},{'river' if s in RIVER else 'money'}\n" for s in (RIVER + MONEY) * 10))
    out = tmp_path / "clf"
    result = folio("classify", "train", "--data", str(data), "--features", str(models["table"]), "--embeddings", "glove",
                   "--out", str(out), "--hidden", "8", "--batch-size", "16", "--max-steps", "2", "--eval-every", "2",
                   "--max-time", "1e9")  # 16: the split keeps a repeated text in one part, so few distinct ones train
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GloVe vectors for" in result.stderr
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["classifier"]["embedding_dim"] == 50 and config["classifier"]["extra_features"] == 48
