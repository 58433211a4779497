"""`folio classify`: sequence classification (IMDb sentiment by default), end to end.

    >>> from folio.tasks.classify import TextClassifier
    >>> clf = TextClassifier.from_pretrained("runs/imdb")                 # doctest: +SKIP
    >>> clf.predict(["A wonderful, moving film.", "Dull and far too long."])  # doctest: +SKIP
    [{'label': 'pos', 'probability': 0.97, ...}, {'label': 'neg', 'probability': 0.94, ...}]

A checkpoint directory holds everything a raw string needs: `config.json` (cleaning, truncation,
labels, model shape), `vocab.json` (and `tokenizer.json` for subwords) and `model.safetensors`.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from folio.data.reviews import (
    LabeledTexts,
    download_aclimdb,
    imdb_splits,
    load_aclimdb,
    read_labeled_file,
    reber_dataset,
    stratified_split,
)
from folio.data.text import (
    ClassificationBatches,
    SubwordTokenizer,
    TextCleaner,
    WordVocab,
    load_tokenizer,
    pad_sequences,
    truncate,
)
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.classifier import ClassifierConfig, RecurrentClassifier
from folio.models.transformer import TransformerClassifier, TransformerClassifierConfig
from folio.runtime import init_distributed, seed_everything, select_device, shutdown_distributed
from folio.training.checkpoint import load_weights, read_config, resume_directory
from folio.training.progress import Progress
from folio.training.trainer import TrainConfig, Trainer

TASK = "classify"
EMBEDDED = ("imdb", "rt", "reber", "aclimdb")


@dataclass
class ClassifyTrainOptions:
    """Everything `folio classify train` accepts, with the defaults of the CLI."""

    data: str = "imdb"  # imdb | rt | reber | aclimdb (download) | an aclImdb directory | a CSV/JSONL file
    out: str = "runs/classify"
    text: dict = field(default_factory=dict)  # TextCleaner fields: max_chars, lower, level
    tokenizer: str = "word"  # word | subword
    vocab_size: int = 20_000  # top-V words (or the subword vocabulary size); the book: 10,000
    oov_buckets: int = 1000
    max_len: int | None = 400  # tokens kept per text; None keeps all
    truncation: str = "head"  # which tokens a longer text keeps: head | head_tail
    embeddings: str | None = None  # None | "glove"
    encoder: str | None = None  # None: the recurrent model; "minilm": frozen MiniLM features + a small head
    init_from: str | None = None  # "minilm" (with arch transformer), or a `folio lm` checkpoint directory (ULMFiT)
    head_hidden: int = 0  # the sentence head's hidden layer (0: linear)
    encoder_max_length: int = 256  # MiniLM tokens per text
    embedding_lr_scale: float = 1.0  # discriminative learning rate for the embedding
    layer_lr_decay: float = 1.0  # ULMFiT's discriminative rates: each layer down from the head learns at lr / this
    model: dict = field(default_factory=dict)  # ClassifierConfig fields except vocab_size, num_classes; or
    # {"arch": "transformer", "layers", "hidden", "heads", "dropout", "pooling"}
    batch_size: int = 64
    labels: list[str] | None = None  # fix the label set (file data); None: read from the data
    valid_fraction: float = 0.1
    split_seed: int = 0  # the held-out test split depends on this alone
    reber_size: int = 10_000
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=600))
    device: str = "auto"
    resume: str | None = None
    eval_batch_size: int = 128
    progress: bool = True


# ---- data --------------------------------------------------------------------------------------
def load_splits(data: str, split_seed: int = 0, valid_fraction: float = 0.1, reber_size: int = 10_000,
                labels: list[str] | None = None) -> dict[str, LabeledTexts]:
    """train / valid (/ test where the data has one) for a `--data` value."""
    if data in ("imdb", "rt"):
        return imdb_splits(data, valid_fraction=valid_fraction, seed=split_seed)
    if data == "reber":
        return {"train": reber_dataset(reber_size, split_seed), "valid": reber_dataset(max(reber_size // 10, 200), split_seed + 1),
                "test": reber_dataset(max(reber_size // 10, 200), split_seed + 2)}
    if data == "aclimdb":
        data = str(download_aclimdb())
    path = Path(data)
    if path.is_dir():
        full = load_aclimdb(path, "train")
        test = load_aclimdb(path, "test") if (path / "test").is_dir() else None
    elif path.is_file():
        full, test = read_labeled_file(path, labels), None
    else:
        raise DataError(f"--data {data!r}: not one of {', '.join(EMBEDDED)}, an aclImdb directory or a CSV/JSONL file")
    if labels is not None and full.label_names != labels:
        raise DataError(f"{data}: labels {full.label_names} do not match --labels {labels}")
    rest, valid = stratified_split(full.labels, valid_fraction, split_seed + 1)
    splits = {"train": full.subset(rest), "valid": full.subset(valid)}
    if test is not None:
        splits["test"] = test
    return splits


def encode_texts(tokenizer, texts: list[str], max_len: int | None, what: str = "text", truncation: str = "head") -> list[list[int]]:
    """Raw strings → id lists cut to `max_len` (see `truncate`); an empty text, or one with nothing left
    after cleaning, is an error."""
    out = []
    for number, text in enumerate(texts, 1):
        if not text or not text.strip():
            raise DataError(f"{what} {number} is empty; give some text to classify")
        ids = tokenizer.encode_text(text)
        if not ids:
            raise DataError(f"{what} {number} ({text[:40]!r}) has no letters left after cleaning; nothing to classify")
        out.append(truncate(ids, max_len, truncation))
    return out


@torch.no_grad()
def score_sequences(model: RecurrentClassifier, sequences: list[list[int]], batch_size: int = 128) -> torch.Tensor:
    """Class probabilities (N, C), computed in length-sorted batches (little padding) and put back in order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    probs = torch.empty(len(sequences), model.config.num_classes)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_sequences([sequences[i] for i in rows])
        logits = model(ids.to(device), mask.to(device))
        probs[rows] = logits.float().softmax(-1).cpu()
    model.train(was_training)
    return probs


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count one half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: list[int] | torch.Tensor, probs: torch.Tensor) -> dict:
    """accuracy, precision, recall, f1, roc_auc, confusion_matrix (rows: true, columns: predicted), n.

    Binary: precision/recall/f1 of class 1 and the AUC of its probability. More classes: macro averages
    and the macro one-vs-rest AUC.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs_np = probs.float().numpy()
    classes = probs_np.shape[1]
    predicted = probs_np.argmax(1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = []
    for c in range(classes):
        tp = confusion[c, c]
        precision = tp / confusion[:, c].sum() if confusion[:, c].sum() else 0.0
        recall = tp / confusion[c].sum() if confusion[c].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        auc = _rank_auc(probs_np[:, c], labels == c)
        per_class.append((precision, recall, f1, auc))
    if classes == 2:
        precision, recall, f1, auc = per_class[1]
    else:
        precision, recall, f1 = (float(np.mean([p[i] for p in per_class])) for i in range(3))
        aucs = [p[3] for p in per_class if p[3] is not None]
        auc = float(np.mean(aucs)) if aucs else None
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
        "roc_auc": auc, "confusion_matrix": confusion.tolist(), "n": int(len(labels)),
    }


# ---- training ----------------------------------------------------------------------------------
def build_classifier(model: dict) -> RecurrentClassifier | TransformerClassifier:
    """The classifier a `config.json` "model" section describes."""
    if model.get("type") == "transformer_classifier":
        return TransformerClassifier(TransformerClassifierConfig(**model))
    return RecurrentClassifier(ClassifierConfig(**model))


def _from_language_model(options: ClassifyTrainOptions, num_classes: int) -> tuple[RecurrentClassifier | TransformerClassifier, object, str]:
    """ULMFiT-style: a classifier whose tokenizer, embedding and recurrent (or Transformer) layers are a
    `folio lm` checkpoint's (read once), and a note for the log. The architecture is the checkpoint's;
    pooling, dropout and masking are this run's."""
    from folio.tasks.lm import LanguageModel

    lm = LanguageModel.from_pretrained(options.init_from)
    if lm.vocab.kind == "char":
        raise ConfigError(f"--init-from {options.init_from}: a character-level language model has no padding id; "
                          "pretrain one with --tokenizer word or --tokenizer bpe")
    lm_config, arch = lm.model.config, lm.config["model"].get("arch", "gru")
    model_dict = dict(options.model)
    dropout = model_dict.get("dropout", 0.1)
    vocab_size = lm_config.vocab_size + (1 if arch == "bert" else 0)  # a masked LM's last row is [MASK]
    if arch in ("gru", "lstm"):
        if not lm_config.embedding_dim:
            raise ConfigError(f"--init-from {options.init_from}: the language model reads one-hot input "
                              "(--embedding-dim 0); a classifier needs one trained with --embedding-dim N")
        config = ClassifierConfig(vocab_size=vocab_size, num_classes=num_classes, arch=arch, layers=lm_config.layers,
                                  hidden=lm_config.hidden, embedding_dim=lm_config.embedding_dim, bidirectional=False,
                                  pooling=model_dict.get("pooling", "max_mean"), dropout=dropout,
                                  masking=model_dict.get("masking", True))
        model = RecurrentClassifier(config)
        state = {"embedding.weight": lm.model.embedding.weight}
        for name, value in lm.model.rnn.named_parameters():  # weight_ih_l{k} → rnns.{k}.0.weight_ih_l0
            stem, layer = name.rsplit("_l", 1)
            state[f"rnns.{layer}.0.{stem}_l0"] = value
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise CheckpointError(f"{options.init_from}: recurrent weights do not map onto the classifier "
                                  f"(missing {missing}, unexpected {unexpected})")
        loaded = "embedding and recurrent layers"
    else:
        pooling = model_dict.get("pooling", "mean")
        if arch == "gpt":
            config = TransformerClassifierConfig(None, num_classes, pooling, dropout, init_from=str(options.init_from),
                                                 gpt={**lm_config.to_dict(), "dropout": dropout})
            model = TransformerClassifier(config)
            model.gpt.load_state_dict(lm.model.state_dict())
        else:
            bert = lm_config.bert_config()
            bert.hidden_dropout_prob = dropout
            config = TransformerClassifierConfig(bert.to_dict(), num_classes, pooling, dropout, init_from=str(options.init_from))
            model = TransformerClassifier(config)
            model.bert.load_state_dict(lm.model.bert.state_dict())
        loaded = f"{arch.upper()} embedding and blocks"
        if options.max_len is None or options.max_len > lm_config.context:
            asked = f"--max-len {options.max_len}" if options.max_len else "--max-len 0 (every token)"
            raise ConfigError(f"{asked} is longer than the language model's context "
                              f"({lm_config.context}); give --max-len {lm_config.context} or less")
    return model, lm.vocab, f"{loaded} from the language model in {options.init_from}"


def _new_model(options: ClassifyTrainOptions, tokenizer, num_classes: int) -> tuple[RecurrentClassifier | TransformerClassifier, str]:
    """A fresh classifier for `tokenizer`, pretrained parts loaded; and a note on them for the log."""
    model_dict = dict(options.model)
    if model_dict.get("arch") == "transformer":
        dropout, pooling = model_dict.get("dropout", 0.1), model_dict.get("pooling", "mean")
        if options.init_from == "minilm":
            from folio.models.sentence_encoder import load_bert, minilm_directory

            bert = load_bert(minilm_directory(), dropout)
            config = TransformerClassifierConfig(bert.config.to_dict(), num_classes, pooling, dropout, init_from="minilm")
            model = TransformerClassifier(config)
            model.bert = bert  # the loaded encoder itself, not a second copy of its weights
            return model, "pretrained MiniLM weights loaded"
        config = TransformerClassifierConfig.small(
            len(tokenizer), num_classes, model_dict.get("layers", 4), model_dict.get("hidden", 256), model_dict.get("heads", 4),
            max_len=options.max_len, dropout=dropout, pooling=pooling)
        return TransformerClassifier(config), ""
    if options.embeddings == "glove":
        if options.tokenizer != "word":
            raise ConfigError("--embeddings glove needs --tokenizer word (GloVe vectors are for whole words)")
        if model_dict.get("embedding_dim", 50) != 50:
            raise ConfigError(f"--embeddings glove is 50-dimensional; drop --embedding-dim {model_dict['embedding_dim']}")
        model_dict["embedding_dim"] = 50
    model = RecurrentClassifier(ClassifierConfig(vocab_size=len(tokenizer), num_classes=num_classes, **model_dict))
    if options.embeddings != "glove":
        return model, ""
    from folio.data.embeddings import glove_matrix

    matrix, found = glove_matrix(tokenizer.words, len(tokenizer), seed=options.train.seed)
    model.load_embeddings(matrix)
    return model, f"GloVe vectors for {found:,} of {len(tokenizer.words):,} words"


def _build_tokenizer(options: ClassifyTrainOptions, texts: list[str]):
    if options.init_from == "minilm":
        from folio.data.text import PretrainedTokenizer
        from folio.models.sentence_encoder import minilm_directory

        return PretrainedTokenizer.from_file(minilm_directory() / "tokenizer.json", options.max_len, options.truncation)
    cleaner = TextCleaner(**options.text)
    if options.tokenizer == "word":
        return WordVocab.fit((cleaner.tokens(t) for t in texts), options.vocab_size, options.oov_buckets, cleaner=cleaner)
    if options.tokenizer == "subword":
        return SubwordTokenizer.fit(texts, options.vocab_size, cleaner)
    raise ConfigError(f"--tokenizer {options.tokenizer!r}: choose word or subword")


def train(options: ClassifyTrainOptions) -> dict:
    """Train a classifier; returns the trainer's summary plus validation metrics of the best model."""
    if options.embeddings not in (None, "glove"):
        raise ConfigError(f"--embeddings {options.embeddings!r}: choose none or glove")
    if options.max_len is not None and options.max_len < 1:
        raise ConfigError(f"--max-len must be at least 1, got {options.max_len}")
    transformer = options.model.get("arch") == "transformer"
    if transformer and (options.max_len is None or options.max_len > 512):
        raise ConfigError("a Transformer classifier reads at most 512 tokens: give --max-len 512 or less")
    if options.init_from == "minilm" and not transformer:
        raise ConfigError("--init-from minilm fine-tunes a Transformer: add --arch transformer")
    if options.init_from not in (None, "minilm") and options.embeddings is not None:
        raise ConfigError("--init-from a language model brings its own embeddings: drop --embeddings")
    if options.layer_lr_decay < 1:
        raise ConfigError(f"--layer-lr-decay must be at least 1 (lower layers learn slower), got {options.layer_lr_decay}")
    device = select_device(options.device)
    dist_info = init_distributed(device)
    try:
        seed_everything(options.train.seed + dist_info.rank)
        out = Path(options.out)
        splits = load_splits(options.data, options.split_seed, options.valid_fraction, options.reber_size, options.labels)
        label_names = splits["train"].label_names
        if options.encoder is not None:
            return _train_sentence_head(options, splits, device, dist_info)
        resume_dir, saved = resume_directory(options.resume, out, TASK)
        if resume_dir is not None:
            tokenizer = load_tokenizer(resume_dir)
            model, note = build_classifier(saved["model"]), ""
        elif options.init_from not in (None, "minilm"):
            model, tokenizer, note = _from_language_model(options, len(label_names))
        else:
            tokenizer = _build_tokenizer(options, splits["train"].texts)
            model, note = _new_model(options, tokenizer, len(label_names))
        model_config = model.config
        train_ids = encode_texts(tokenizer, splits["train"].texts, options.max_len, "training text", options.truncation)
        valid_ids = encode_texts(tokenizer, splits["valid"].texts, options.max_len, "validation text", options.truncation)
        batches = ClassificationBatches(train_ids, splits["train"].labels, options.batch_size, seed=options.train.seed,
                                        rank=dist_info.rank, world_size=dist_info.world_size)
        groups = discriminative_groups(model, options.embedding_lr_scale, options.layer_lr_decay)
        saved_config = {
            "task": TASK,
            "model": model_config.to_dict(),
            "labels": label_names,
            "text": {"tokenizer": tokenizer.kind, "max_len": options.max_len, "truncation": options.truncation,
                     **(tokenizer.cleaner.to_dict() if tokenizer.cleaner else {})},
            "data": {"data": options.data, "split_seed": options.split_seed, "valid_fraction": options.valid_fraction,
                     "vocab_size": options.vocab_size, "oov_buckets": options.oov_buckets,
                     "embeddings": options.embeddings, "batch_size": options.batch_size},
            "train": options.train.to_dict(),
        }
        valid_labels = torch.tensor(splits["valid"].labels)

        def evaluate(m):
            probs = score_sequences(m, valid_ids, options.eval_batch_size)
            return F.nll_loss(probs.clamp_min(1e-12).log(), valid_labels).item()

        trainer = Trainer(
            model, batches, options.train, out, evaluate=evaluate, saved_config=saved_config,
            write_extras=tokenizer.save, device=device, dist_info=dist_info, progress=options.progress,
            param_groups=groups,
        )
        if resume_dir is not None:
            trainer.resume(resume_dir)
        if dist_info.is_main:
            params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            mean_len = sum(map(len, train_ids)) / len(train_ids)
            trainer.progress.message(
                f"{model_config.describe()}, "
                f"{params:,} trained parameters, {len(tokenizer):,} embedding rows, {len(train_ids):,} training texts "
                f"({mean_len:.0f} tokens on average), labels {label_names}, device {device}"
                + (f", {note}" if note else "")
                + (f", resuming at step {trainer.step}" if resume_dir is not None else "")
            )
        summary = trainer.train()
        if dist_info.is_main:
            best = TextClassifier.from_pretrained(out, device=str(device))
            summary["valid"] = classification_metrics(splits["valid"].labels, score_sequences(best.model, valid_ids, options.eval_batch_size))
            trainer.progress.message(f"validation accuracy {summary['valid']['accuracy']:.4f} on {summary['valid']['n']} texts")
        return summary
    finally:
        shutdown_distributed()


def discriminative_groups(model: RecurrentClassifier | TransformerClassifier, pretrained_scale: float = 1.0,
                          layer_decay: float = 1.0) -> list[dict]:
    """Optimizer parameter groups with discriminative learning rates.

    The pretrained part (word embeddings of a recurrent model, the whole encoder of a Transformer) learns
    at lr × `pretrained_scale`; and with ULMFiT's `layer_decay` every layer below the head learns
    `layer_decay` times slower than the one above it: the head at lr, the top recurrent layer or block
    at lr / decay, …, the embedding at lr / decay^(layers + 1).
    """
    import re

    transformer = isinstance(model, TransformerClassifier)
    pretrained = ("bert.", "gpt.") if transformer else ("embedding.",)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depth = {n: int(m.group(1)) + 1 if (m := re.search(r"(?:rnns|blocks)\.(\d+)\.", n)) else 0 for n, _ in named}
    top = max(depth.values(), default=0) + 1
    for name, _ in named:
        if name.startswith(("head.", "gpt.norm.")):
            depth[name] = top
    groups: dict[float, list] = {}
    for name, param in named:
        scale = layer_decay ** -(top - depth[name]) * (pretrained_scale if name.startswith(pretrained) else 1.0)
        groups.setdefault(scale, []).append(param)
    return [{"params": params, "lr_scale": scale} for scale, params in sorted(groups.items(), reverse=True)]


def _train_sentence_head(options: ClassifyTrainOptions, splits: dict, device, dist_info) -> dict:
    """Frozen MiniLM sentence vectors, computed once, under a small head trained by the shared loop."""
    from folio.data.text import FeatureBatches
    from folio.models.sentence_encoder import SentenceEncoder, SentenceHead, SentenceHeadConfig

    if options.encoder != "minilm":
        raise ConfigError(f"--encoder {options.encoder!r}: the only sentence encoder is minilm")
    if options.resume is not None:
        raise ConfigError("--resume is not supported with --encoder (the head trains in seconds; train again)")
    for name in ("train", "valid"):
        encode_texts(_NoTokenizer, splits[name].texts, None, f"{name} text")  # empty texts fail before the slow part
    encoder = SentenceEncoder.from_package(options.encoder_max_length).to(device)
    label_names = splits["train"].label_names
    progress = Progress(enabled=options.progress and dist_info.is_main)
    progress.message(f"encoding {len(splits['train']) + len(splits['valid']):,} texts with frozen MiniLM "
                     f"(up to {options.encoder_max_length} tokens each)")
    features = {name: encoder.encode(splits[name].texts, batch_size=options.eval_batch_size // 2 or 1)
                for name in ("train", "valid")}
    config = SentenceHeadConfig(dim=encoder.dim, num_classes=len(label_names), hidden=options.head_hidden,
                                dropout=options.model.get("dropout", 0.1), max_length=options.encoder_max_length)
    head = SentenceHead(config)
    batches = FeatureBatches(features["train"], splits["train"].labels, options.batch_size, seed=options.train.seed,
                             rank=dist_info.rank, world_size=dist_info.world_size)
    valid_labels = torch.tensor(splits["valid"].labels)

    def evaluate(m):
        return F.cross_entropy(m(features["valid"].to(device)).float(), valid_labels.to(device)).item()

    saved_config = {"task": TASK, "model": config.to_dict(), "labels": label_names,
                    "text": {"tokenizer": "minilm", "max_len": None},
                    "data": {"data": options.data, "split_seed": options.split_seed,
                             "valid_fraction": options.valid_fraction, "batch_size": options.batch_size},
                    "train": options.train.to_dict()}
    trainer = Trainer(head, batches, options.train, options.out, evaluate=evaluate, saved_config=saved_config,
                      device=device, dist_info=dist_info, progress=options.progress)
    summary = trainer.train()
    if dist_info.is_main:
        load_weights(head, options.out)
        with torch.no_grad():
            probs = head.eval()(features["valid"].to(device)).float().softmax(-1).cpu()
        summary["valid"] = classification_metrics(splits["valid"].labels, probs)
        trainer.progress.message(f"validation accuracy {summary['valid']['accuracy']:.4f} on {summary['valid']['n']} texts")
    return summary


class _NoTokenizer:
    """Stands in for a vocabulary where only emptiness is checked (MiniLM tokenizes on its own)."""

    @staticmethod
    def encode_text(text: str) -> list[int]:
        return [1]


# ---- using a model -----------------------------------------------------------------------------
class TextClassifier:
    """A trained classifier with its cleaning, vocabulary and labels: raw strings in, labels out.

    >>> clf = TextClassifier.from_pretrained("runs/imdb")            # doctest: +SKIP
    >>> clf.predict(["What a waste of two hours."])[0]["label"]      # doctest: +SKIP
    'neg'
    """

    def __init__(self, model: RecurrentClassifier, tokenizer, config: dict):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.labels: list[str] = config["labels"]
        self.max_len: int | None = config.get("text", {}).get("max_len")
        self.truncation: str = config.get("text", {}).get("truncation", "head")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> TextClassifier:
        config = read_config(directory, TASK)
        if isinstance(config.get("model"), dict) and config["model"].get("type") == "sentence_head":
            return cls._sentence_head(directory, config, device)
        try:
            model = build_classifier(config["model"])
            labels = config["labels"]
        except (KeyError, TypeError, ConfigError) as err:
            raise CheckpointError(f"{directory}/config.json has no valid 'model'/'labels' section: {err}") from err
        if len(labels) != model.config.num_classes:
            raise CheckpointError(f"{directory}/config.json: {len(labels)} labels for {model.config.num_classes} classes")
        load_weights(model, directory)
        return cls(model.to(select_device(device)), load_tokenizer(directory), config)

    @classmethod
    def _sentence_head(cls, directory, config: dict, device: str) -> TextClassifier:
        from folio.models.sentence_encoder import SentenceEncoder, SentenceHead, SentenceHeadConfig

        try:
            head_config = SentenceHeadConfig(**config["model"])
        except TypeError as err:
            raise CheckpointError(f"{directory}/config.json has no valid 'model' section: {err}") from err
        head = SentenceHead(head_config)
        load_weights(head, directory)
        encoder = SentenceEncoder.from_package(head_config.max_length)
        target = select_device(device)
        clf = cls(head.to(target), _NoTokenizer, config)
        clf.encoder = encoder.to(target)
        return clf

    encoder = None  # a frozen sentence encoder, for sentence-head models

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _probabilities(self, texts: list[str], batch_size: int, what: str) -> torch.Tensor:
        sequences = self.encode(texts, what)
        if self.encoder is None:
            return score_sequences(self.model, sequences, batch_size)
        with torch.no_grad():
            features = self.encoder.encode(texts, batch_size=batch_size)
            return self.model.eval()(features.to(self.device)).float().softmax(-1).cpu()

    def encode(self, texts: list[str], what: str = "input") -> list[list[int]]:
        return encode_texts(self.tokenizer, texts, self.max_len, what, self.truncation)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(N, C) class probabilities."""
        if isinstance(texts, str):
            texts = [texts]
        return self._probabilities(texts, batch_size, "input")

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """Per text: its label, that label's probability and every label's probability."""
        probs = self.predict_proba(texts, batch_size)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.labels[best], "probability": row[best],
                        "probabilities": dict(zip(self.labels, row, strict=True))})
        return out

    def evaluate(self, data: LabeledTexts, batch_size: int = 128) -> dict:
        if data.label_names != self.labels:
            raise DataError(f"the data's labels {data.label_names} are not the model's {self.labels}")
        return classification_metrics(data.labels, self._probabilities(data.texts, batch_size, "text"))

    def explain(self, text: str, steps: int = 50, target: str | None = None) -> dict:
        """Per-token integrated gradients of log p(target | text) (default: the predicted label).

        The baseline is the all-padding input (zero embeddings, same mask); the contributions add up to
        log p(target | text) − log p(target | baseline), up to the Riemann-sum error of `steps`.
        """
        if self.encoder is not None:
            raise ConfigError("explain works with recurrent models; this one is a head over frozen MiniLM vectors")
        tokens, ids = self.tokenizer.tokenize(text) if text and text.strip() else ([], [])
        if not ids:
            raise DataError("the text to explain is empty (or has no letters left after cleaning)")
        tokens, ids = truncate(tokens, self.max_len, self.truncation), truncate(ids, self.max_len, self.truncation)
        ids_t = torch.tensor([ids], device=self.device)
        mask = torch.ones_like(ids_t, dtype=torch.bool)
        with torch.no_grad():
            embedded = self.model.embedding(ids_t)  # (1, T, E)
            probs = self.model.forward_embedded(embedded, mask).float().softmax(-1)[0]
        index = int(probs.argmax()) if target is None else self.labels.index(target)
        alphas = torch.arange(1, steps + 1, device=self.device, dtype=embedded.dtype).view(-1, 1, 1) / steps  # (S, 1, 1)
        scaled = (alphas * embedded).detach().requires_grad_(True)  # (S, T, E)
        with torch.enable_grad():
            log_probs = self.model.forward_embedded(scaled, mask.expand(steps, -1)).float().log_softmax(-1)
            (grads,) = torch.autograd.grad(log_probs[:, index].sum(), scaled)
        scores = (grads.mean(0) * embedded[0]).sum(-1)  # (T,)
        return {"label": self.labels[index], "probability": float(probs[index]),
                "tokens": tokens, "scores": scores.tolist()}


def render_ansi(explanation: dict, color: bool = True) -> str:
    """Tokens coloured green (for the label) or red (against), brighter for larger contributions."""
    scores = explanation["scores"]
    scale = max((abs(s) for s in scores), default=1.0) or 1.0
    pieces = []
    for token, score in zip(explanation["tokens"], scores, strict=True):
        if not color:
            pieces.append(f"{token}({score:+.3f})")
            continue
        level = min(5, int(abs(score) / scale * 5.999))
        # 256-colour cube: green (0, g, 0) or red (r, 0, 0) backgrounds, darkest for the weakest
        code = 16 + (36 * level if score < 0 else 6 * level)
        pieces.append(f"\033[48;5;{code}m\033[97m{token}\033[0m" if level else token)
    head = f"{explanation['label']} ({explanation['probability']:.3f})"
    return head + "\n" + " ".join(pieces)


def render_html(explanation: dict) -> str:
    scores = explanation["scores"]
    scale = max((abs(s) for s in scores), default=1.0) or 1.0
    spans = []
    for token, score in zip(explanation["tokens"], scores, strict=True):
        alpha = abs(score) / scale
        rgb = "0,160,0" if score >= 0 else "220,0,0"
        spans.append(f'<span title="{score:+.4f}" style="background: rgba({rgb},{alpha:.3f}); padding: 1px 2px">'
                     f"{html.escape(token)}</span>")
    label = html.escape(f"{explanation['label']} ({explanation['probability']:.3f})")
    return ("<!doctype html>\n<meta charset=\"utf-8\">\n<title>folio classify explain</title>\n"
            f"<p><b>{label}</b>: green supports the label, red opposes it (integrated gradients)</p>\n"
            f"<p style=\"line-height: 1.8; font-family: sans-serif\">{' '.join(spans)}</p>\n")


def write_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

