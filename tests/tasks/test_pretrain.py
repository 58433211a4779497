"""Pretraining at word or BPE level (`folio lm` for GRU/LSTM and GPT, `folio pretrain` for BERT), then
`folio classify train --init-from LM_DIR`: ULMFiT (GRU/LSTM), causal LM (GPT) and masked LM (BERT) checkpoints
start classifiers that learn; a BERT pretrained with next-sentence prediction learns it and starts a classifier
of pairs of texts. `folio pretrain` and `folio lm` refuse each other's models by name."""

import json
import random

import pytest
import torch

from folio.data.sentence_pairs import sentences
from folio.errors import CheckpointError, ConfigError
from folio.tasks.classify import ClassifyTrainOptions, TextClassifier, discriminative_groups
from folio.tasks.classify import train as train_classifier
from folio.tasks.lm import LanguageModel, LMTrainOptions
from folio.tasks.lm import train as train_lm
from folio.tasks.pretrain import PretrainedEncoder, PretrainOptions
from folio.tasks.pretrain import train as train_encoder
from folio.training.config import TrainConfig
from tests.helpers import run_folio, synthetic_reviews, topic_documents


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """Labelled synthetic reviews (JSONL) and their text alone (the language models' corpus)."""
    root = tmp_path_factory.mktemp("pretrain")
    rows = synthetic_reviews(600, 0)
    labelled = root / "reviews.jsonl"
    labelled.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows))
    corpus = root / "corpus.txt"
    corpus.write_text("".join(text + "\n" for text, _ in synthetic_reviews(1500, 1)))
    return root, labelled, corpus


def pretrain(root, corpus, name, tokenizer, model, steps=150, lr=5e-3, train=None, options=None):
    """A language model (`folio lm`) or an encoder (`folio pretrain`, by the arch) trained on `corpus`."""
    encoder = model["arch"] in ("bert", "bilm")
    train = train or (train_encoder if encoder else train_lm)
    options = options or (PretrainOptions if encoder else LMTrainOptions)
    out = root / name
    summary = train(options(
        corpus=str(corpus), out=str(out), tokenizer=tokenizer, vocab_size=60 if tokenizer == "word" else 300,
        oov_buckets=4, lower=tokenizer == "word", model=model, seq_len=24, batch_size=16,
        train=TrainConfig(lr=lr, max_steps=steps, warmup_steps=10, eval_every=steps, save_every=10_000, seed=0),
        device="cpu", progress=False))
    return out, summary


def fine_tune(root, labelled, lm_dir, name, **options):
    settings = dict(data=str(labelled), out=str(root / name), init_from=str(lm_dir), max_len=24, batch_size=16,
                    model={"dropout": 0.0}, layer_lr_decay=1.5,
                    train=TrainConfig(lr=1e-2, max_steps=200, warmup_steps=10, eval_every=100, save_every=10_000),
                    device="cpu", progress=False)
    settings.update(options)
    return train_classifier(ClassifyTrainOptions(**settings))


@pytest.mark.slow
def test_word_level_gru_lm_starts_a_ulmfit_classifier(reviews):
    root, labelled, corpus = reviews
    lm_dir, _ = pretrain(root, corpus, "gru_lm", "word", {"arch": "gru", "layers": 2, "hidden": 32, "embedding_dim": 16,
                                                          "dropout": 0.0})
    lm = LanguageModel.from_pretrained(lm_dir)
    valid = lm.evaluate(corpus.read_text()[-3000:])
    assert valid["level"] == "word" and valid["loss"] < 3.3  # uniform over 65 ids: 4.17 nats
    text = lm.generate("the film", max_new_tokens=8, temperature=0.5, seed=0)
    assert text.startswith("the film ") and len(text.split()) == 10  # words, spaced

    # the classifier starts from the LM's own tokenizer, embedding and both recurrent layers
    from folio.tasks.classify import _from_language_model

    model, _, note = _from_language_model(ClassifyTrainOptions(init_from=str(lm_dir), model={}, max_len=24), 2)
    assert "embedding and recurrent layers" in note and not model.config.bidirectional and model.config.layers == 2
    torch.testing.assert_close(model.embedding.weight, lm.model.embedding.weight)
    for layer in range(2):
        torch.testing.assert_close(model.rnns[layer][0].weight_hh_l0, getattr(lm.model.rnn, f"weight_hh_l{layer}"))
        torch.testing.assert_close(model.rnns[layer][0].bias_ih_l0, getattr(lm.model.rnn, f"bias_ih_l{layer}"))

    summary = fine_tune(root, labelled, lm_dir, "gru_clf")
    assert summary["valid"]["accuracy"] >= 0.9
    clf = TextClassifier.from_pretrained(root / "gru_clf")
    assert clf.tokenizer.kind == "word" and len(clf.tokenizer) == lm.model.config.vocab_size
    assert [r["label"] for r in clf.predict(["a wonderful brilliant film", "an awful boring film"])] == ["pos", "neg"]


@pytest.mark.slow
def test_bpe_gpt_lm_generates_text_and_starts_a_causal_classifier(reviews):
    root, labelled, corpus = reviews
    lm_dir, _ = pretrain(root, corpus, "gpt_lm", "bpe", {"arch": "gpt", "layers": 2, "hidden": 32, "heads": 2,
                                                         "context": 32, "dropout": 0.0})
    lm = LanguageModel.from_pretrained(lm_dir)
    pieces = [step[0] for step in lm.stream("The film was", max_new_tokens=30, temperature=0.7, seed=3)]
    assert "The film was" + "".join(pieces) == lm.generate("The film was", max_new_tokens=30, temperature=0.7, seed=3)
    assert "".join(pieces).strip()  # text, not ids

    from folio.tasks.classify import _from_language_model

    model, _, _ = _from_language_model(ClassifyTrainOptions(init_from=str(lm_dir), model={"dropout": 0.0}, max_len=32), 2)
    ids = torch.tensor([lm.vocab.encode("A brilliant and moving film!")])
    with torch.no_grad():
        hidden = model.eval().gpt.hidden_states(model.embedding(ids))
        torch.testing.assert_close(lm.model.head(hidden), lm.model(ids)[0])  # the same trunk, the LM head aside
        # right padding never reaches a causal model's real tokens
        padded = torch.cat([ids, torch.zeros(1, 9, dtype=torch.long)], dim=1)
        torch.testing.assert_close(model(padded, padded != 0), model(ids), atol=1e-5, rtol=0)
    for too_long in (400, None):  # None: every token, which a 32-position model cannot read
        with pytest.raises(ConfigError, match="longer than the language model's context"):
            _from_language_model(ClassifyTrainOptions(init_from=str(lm_dir), model={}, max_len=too_long), 2)

    summary = fine_tune(root, labelled, lm_dir, "gpt_clf", max_len=32, model={"dropout": 0.0, "pooling": "mean"})
    assert summary["valid"]["accuracy"] >= 0.9
    clf = TextClassifier.from_pretrained(root / "gpt_clf")
    assert clf.tokenizer.kind == "bpe" and clf.model.config.gpt is not None


@pytest.mark.slow
def test_masked_lm_pretraining_then_fine_tuning(reviews):
    root, labelled, corpus = reviews
    model = {"arch": "bert", "layers": 2, "hidden": 32, "heads": 2, "context": 24, "dropout": 0.0, "mask_prob": 0.15}
    lm_dir, _ = pretrain(root, corpus, "bert_lm", "word", model, steps=200, lr=3e-3)
    lm = PretrainedEncoder.from_pretrained(lm_dir)
    report = lm.evaluate(corpus.read_text()[-6000:])
    assert report["loss"] < 3.3  # masked words of the filler vocabulary, from ln(65) = 4.17
    with pytest.raises(ConfigError, match="does not generate"):
        LanguageModel.from_pretrained(lm_dir)

    from folio.tasks.classify import _from_language_model

    clf_model, _, _ = _from_language_model(ClassifyTrainOptions(init_from=str(lm_dir), model={}, max_len=24), 2)
    for name, value in lm.model.bert.state_dict().items():
        torch.testing.assert_close(clf_model.bert.state_dict()[name], value)
    summary = fine_tune(root, labelled, lm_dir, "bert_clf")
    assert summary["valid"]["accuracy"] >= 0.9


# ---- BERT with next-sentence prediction ------------------------------------------------------------------
NSP_MODEL = {"arch": "bert", "layers": 2, "hidden": 32, "heads": 2, "context": 32, "dropout": 0.0, "objective": "mlm+nsp"}


@pytest.fixture(scope="module")
def nsp_data(tmp_path_factory):
    """Documents whose sentences share their document's topic word (blank-line-separated paragraphs), and a
    file of labelled pairs: is text_pair the sentence after text, or one from another document?"""
    root = tmp_path_factory.mktemp("nsp")
    corpus = root / "topics.txt"
    corpus.write_text("\n\n".join(topic_documents(1000, 0)) + "\n")
    pairs = root / "pairs.csv"
    rng = random.Random(1)
    documents = [s for s in (sentences(d) for d in topic_documents(500, 7)) if len(s) > 1]
    rows = ["text,text_pair,label"]
    for i, doc in enumerate(documents):
        k = rng.randrange(len(doc) - 1)
        other = documents[(i + 1 + rng.randrange(len(documents) - 1)) % len(documents)]
        second, label = (doc[k + 1], "next") if i % 2 else (rng.choice(other), "random")
        rows.append(f"{doc[k]},{second},{label}")  # no commas in these sentences
    pairs.write_text("\n".join(rows) + "\n")
    return root, corpus, pairs


@pytest.fixture(scope="module")
def nsp_lm(nsp_data):
    """A tiny BERT pretrained with masked LM + next-sentence prediction on `nsp_data`'s documents."""
    root, corpus, pairs = nsp_data
    out = root / "nsp_lm"
    summary = train_encoder(PretrainOptions(
        corpus=str(corpus), out=str(out), tokenizer="word", vocab_size=60, oov_buckets=4, lower=True, model=NSP_MODEL,
        split=(0.8, 0.1, 0.1), seq_len=32, batch_size=32, device="cpu", progress=False,  # ~100 held-out pairs a split
        train=TrainConfig(lr=3e-3, max_steps=600, warmup_steps=20, eval_every=100, save_every=10_000, seed=0)))
    return root, out, corpus, pairs, summary


@pytest.mark.slow
def test_next_sentence_prediction_is_learned_and_reported(nsp_lm):
    root, out, corpus, _, summary = nsp_lm
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert {"valid_masked_loss", "valid_nsp_loss", "valid_nsp_accuracy"} <= set(evals[-1])
    assert evals[0]["valid_nsp_accuracy"] < 0.7 and evals[-1]["valid_nsp_accuracy"] > 0.8  # chance is 0.5
    best = min(evals, key=lambda e: e["valid_loss"])
    assert best["valid_loss"] == pytest.approx(best["valid_masked_loss"] + best["valid_nsp_loss"])
    lm = PretrainedEncoder.from_pretrained(out)
    report = lm.evaluate_sentence_pairs(str(corpus), "test")  # fixed pairs of documents it never trained on
    assert report["pairs"] >= 90 and report["nsp_accuracy"] > 0.8
    assert report == lm.evaluate_sentence_pairs(str(corpus), "test")  # the same pairs and masks every time
    assert 0 < report["masked_loss"] < 3.0  # uniform over the 28 embedding rows: ln 28 = 3.33
    assert lm.model.bert.embedding.num_embeddings == len(lm.vocab) + 3  # [MASK], [CLS], [SEP]


@pytest.mark.slow
def test_an_nsp_checkpoint_starts_a_pair_classifier_from_its_pooler(nsp_lm):
    root, out, _, pairs, _ = nsp_lm
    from folio.tasks.classify import _from_language_model

    lm = PretrainedEncoder.from_pretrained(out)
    model, tokenizer, note = _from_language_model(ClassifyTrainOptions(init_from=str(out), model={}, max_len=32), 2)
    assert "[CLS] pooler" in note and model.config.pooling == "cls" and model.config.pooler
    for name, value in lm.model.pooler.state_dict().items():
        assert torch.equal(model.pooler.state_dict()[name], value)
    for name, value in lm.model.bert.state_dict().items():
        assert torch.equal(model.bert.state_dict()[name], value)
    assert (model.config.cls_id, model.config.sep_id) == (len(tokenizer) + 1, len(tokenizer) + 2)
    assert not any(k.startswith("nsp") for k in model.state_dict())  # the NSP head is dropped: a new head

    summary = fine_tune(root, pairs, out, "pair_clf", max_len=32,
                        train=TrainConfig(lr=3e-3, max_steps=150, warmup_steps=10, eval_every=150, save_every=10_000))
    assert summary["valid"]["accuracy"] >= 0.85
    clf = TextClassifier.from_pretrained(root / "pair_clf")
    assert clf.pairs
    first, second = ["Comet was film.", "Willow a plot!"], ["Comet the story.", "Glacier quite acting?"]
    together = clf.predict_proba(first + ["a " * 25], text_pairs=second + ["b " * 25])  # padded to the long pair
    alone = torch.cat([clf.predict_proba([t], text_pairs=[p]) for t, p in zip(first, second, strict=True)])
    torch.testing.assert_close(together[:2], alone, atol=1e-5, rtol=0)


def test_discriminative_learning_rates_fall_layer_by_layer():
    from folio.models.classifier import ClassifierConfig, RecurrentClassifier

    model = RecurrentClassifier(ClassifierConfig(vocab_size=20, layers=2, hidden=8, embedding_dim=4, bidirectional=False))
    groups = discriminative_groups(model, layer_decay=2.0)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["head.weight"])] == 1.0
    assert scale_of[id(named["rnns.1.0.weight_ih_l0"])] == 0.5
    assert scale_of[id(named["rnns.0.0.weight_ih_l0"])] == 0.25
    assert scale_of[id(named["embedding.weight"])] == 0.125
    assert [g["lr_scale"] for g in discriminative_groups(model)] == [1.0]  # no decay: one group


def test_language_models_that_cannot_start_a_classifier(reviews, tmp_path):
    root, labelled, corpus = reviews
    char_dir, _ = pretrain(root, corpus, "char_lm", "char", {"arch": "gru", "layers": 1, "hidden": 8}, steps=2)
    with pytest.raises(ConfigError, match="character-level"):
        fine_tune(root, labelled, char_dir, "x")
    onehot_dir, _ = pretrain(root, corpus, "onehot_lm", "word", {"arch": "gru", "layers": 1, "hidden": 8}, steps=2)
    with pytest.raises(ConfigError, match="one-hot"):
        fine_tune(root, labelled, onehot_dir, "y")
    with pytest.raises(CheckpointError, match="holds a 'classify' model"):
        fine_tune(root, labelled, root / "gru_clf" if (root / "gru_clf").exists() else _classifier(root, labelled), "z")


def test_the_two_tasks_refuse_each_others_models_by_name(reviews):
    root, _, corpus = reviews
    gru_dir, _ = pretrain(root, corpus, "tiny_gru", "word", {"arch": "gru", "layers": 1, "hidden": 8}, steps=2)
    with pytest.raises(CheckpointError, match="holds a causal language model .*: folio lm evaluate --model"):
        PretrainedEncoder.from_pretrained(gru_dir)
    bilm_dir, _ = pretrain(root, corpus, "tiny_bilm", "word", {"arch": "bilm", "layers": 1, "hidden": 8}, steps=2)
    with pytest.raises(ConfigError, match="does not generate text; it gives contextual word vectors"):
        LanguageModel.from_pretrained(bilm_dir)
    with pytest.raises(ConfigError, match="--arch bilm is trained by folio pretrain train"):
        pretrain(root, corpus, "x", "word", {"arch": "bilm"}, steps=2, train=train_lm, options=LMTrainOptions)
    with pytest.raises(ConfigError, match="--arch gpt is trained by folio lm train"):
        pretrain(root, corpus, "y", "word", {"arch": "gpt"}, steps=2, train=train_encoder, options=PretrainOptions)
    assert not (root / "x").exists() and not (root / "y").exists()


def _classifier(root, labelled):
    out = root / "plain_clf"
    train_classifier(ClassifyTrainOptions(data=str(labelled), out=str(out), vocab_size=50, oov_buckets=4, max_len=24,
                                          train=TrainConfig(max_steps=2), device="cpu", progress=False))
    return out


TINY_BERT = ("--arch", "bert", "--tokenizer", "word", "--lower", "--vocab-size", "60", "--layers", "1", "--hidden", "16",
             "--heads", "2")


@pytest.mark.slow
def test_the_cli_pretrains_and_fine_tunes(reviews, tmp_path):
    root, labelled, corpus = reviews
    lm_dir = tmp_path / "mlm"
    result = run_folio("lm", "train", "--corpus", corpus, "--out", lm_dir, *TINY_BERT, "--seq-len", "16",
                       "--max-steps", "20", "--eval-every", "20")
    assert result.returncode == 0, result.stderr
    assert "BERT 1x16" in result.stderr and "sample at" not in result.stdout  # a masked LM prints no samples
    evaluated = run_folio("lm", "evaluate", "--model", str(lm_dir), "--corpus", str(corpus), "--json")
    report = json.loads(evaluated.stdout)
    assert report["level"] == "word" and report["tokens"] > 0 and report["loss"] > 0
    refused = run_folio("lm", "sample", "--model", str(lm_dir))
    assert refused.returncode == 2 and "does not generate" in refused.stderr and "Traceback" not in refused.stderr
    tuned = run_folio("classify", "train", "--data", str(labelled), "--init-from", str(lm_dir), "--max-len", "16",
                      "--layer-lr-decay", "2.6", "--max-steps", "10", "--eval-every", "10", "--out", str(tmp_path / "clf"))
    assert tuned.returncode == 0, tuned.stderr
    assert "from the language model in" in tuned.stderr and json.loads(tuned.stdout.splitlines()[-1])["steps"] == 10
    too_long = run_folio("classify", "train", "--data", str(labelled), "--init-from", str(lm_dir),
                         "--max-steps", "1", "--out", str(tmp_path / "clf2"))
    assert too_long.returncode == 2 and "--max-len 16 or less" in too_long.stderr and not (tmp_path / "clf2").exists()


@pytest.mark.slow
def test_the_cli_pretrains_with_nsp_evaluates_and_classifies_pairs(nsp_data, tmp_path):
    _, corpus, pairs = nsp_data
    lm_dir = tmp_path / "nsp"
    result = run_folio("pretrain", "train", "--corpus", corpus, "--out", lm_dir, *TINY_BERT, "--objective", "mlm+nsp",
                       "--seq-len", "24", "--max-steps", "10", "--eval-every", "10")
    assert result.returncode == 0, result.stderr
    assert "masked LM + next-sentence prediction" in result.stderr and "nsp accuracy" in result.stderr
    evaluated = run_folio("pretrain", "evaluate", "--model", str(lm_dir), "--corpus", str(corpus), "--json")
    report = json.loads(evaluated.stdout)
    assert {"loss", "tokens", "nsp_accuracy", "nsp_loss", "masked_loss", "pairs"} <= set(report)
    assert 0 <= report["nsp_accuracy"] <= 1 and report["pairs"] > 0 and report["masked_loss"] > 0
    clf_dir = tmp_path / "clf"
    tuned = run_folio("classify", "train", "--data", str(pairs), "--init-from", str(lm_dir), "--max-len", "24",
                      "--max-steps", "10", "--eval-every", "10", "--out", str(clf_dir))
    assert tuned.returncode == 0, tuned.stderr
    assert "and the [CLS] pooler from the language model" in tuned.stderr
    assert json.loads(tuned.stdout.splitlines()[-1])["valid"]["n"] > 0
    predicted = run_folio("classify", "predict", "--model", str(clf_dir), "--file", str(pairs), "--json")
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert predicted.returncode == 0 and len(rows) == len(pairs.read_text().splitlines()) - 1
    assert {"text", "text_pair", "label", "probability"} <= set(rows[0])
    single = run_folio("classify", "predict", "--model", str(clf_dir), "one text")
    assert single.returncode == 2 and "pairs of texts" in single.stderr and "Traceback" not in single.stderr
