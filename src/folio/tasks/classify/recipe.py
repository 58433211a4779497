"""`folio classify train`: labelled texts → tokenizer → model, trained by `run_training`.

Three kinds of model, by the options:
- a recurrent classifier (the default), or a Transformer (`model={"arch": "transformer"}`), from scratch or
  with pretrained parts: GloVe word vectors, MiniLM's encoder (`init_from="minilm"`), or a `folio lm`
  checkpoint's tokenizer, embedding and layers (`init_from=LM_DIR`, ULMFiT);
- a small head over frozen MiniLM sentence vectors (`encoder="minilm"`), computed once before training.

Data of pairs of texts (`text,text_pair,label`) trains a BERT encoder on `[CLS] a [SEP] b [SEP]` with
segments (`folio.tasks.classify.data.TextEncoding`); a BERT pretrained with next-sentence prediction
(`folio lm train --objective mlm+nsp`) is the start made for it, its [CLS] pooler included.

    >>> from folio.tasks.classify import ClassifyTrainOptions, train
    >>> summary = train(ClassifyTrainOptions(data="imdb", out="runs/imdb"))  # doctest: +SKIP
    >>> summary["valid"]["accuracy"]                                           # doctest: +SKIP
    0.88
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from folio.data.embeddings import glove_matrix
from folio.data.reviews import LabeledTexts
from folio.data.text import ClassificationBatches, FeatureBatches
from folio.errors import ConfigError
from folio.models.bert import load_bert, minilm_directory
from folio.models.classifier import (
    ClassifierConfig,
    ELMoClassifier,
    ELMoClassifierConfig,
    RecurrentClassifier,
    TransformerClassifier,
    TransformerClassifierConfig,
    from_language_model,
)
from folio.models.registry import build_model, load_checkpoint, load_weights, model_section
from folio.models.sentence_encoder import SentenceEncoder, SentenceHead, SentenceHeadConfig
from folio.tasks.classify.data import NoTokenizer, TextEncoding, build_tokenizer, encode_texts, load_splits
from folio.tasks.classify.metrics import classification_metrics, score_features, score_sequences
from folio.tasks.classify.options import ClassifyTrainOptions
from folio.tokenizers import load_tokenizer
from folio.training.progress import Progress
from folio.training.run import Prepared, RunContext, run_training, trained_parameters
from folio.training.trainer import Trainer

TASK = "classify"



class ClassifyRecipe:
    """A classifier's run: the splits of `--data`, a tokenizer and model (new, pretrained, or the resumed
    checkpoint's), shuffled batches of the training split, and the loss on the validation split; after
    training, the best model's validation metrics (`summary["valid"]`)."""

    task = TASK

    def prepare(self, options: ClassifyTrainOptions, context: RunContext) -> Prepared:
        """Build what `run_training` trains from `options` (or from the checkpoint being resumed)."""
        splits = load_splits(options.data, options.split_seed, options.valid_fraction, options.reber_size, options.labels)
        pairs = splits["train"].text_pairs is not None
        if options.encoder is not None:
            if pairs:
                raise ConfigError(f"--encoder {options.encoder} reads one text, and {options.data} holds pairs of texts: "
                                  "drop --encoder (pairs need a BERT encoder: --init-from an mlm+nsp BERT, or --arch transformer)")
            return _prepare_sentence_head(options, context, splits)
        label_names = splits["train"].label_names
        if context.resuming:
            tokenizer = load_tokenizer(context.resume_dir)
            model, note = build_model(model_section(context.saved)), ""
        elif options.init_from not in (None, "minilm"):
            model, tokenizer, note = _from_language_model(options, len(label_names))
        elif options.features is not None:
            model, tokenizer, note = _over_bilm(options, len(label_names))
        else:
            tokenizer = build_tokenizer(options, splits["train"].texts + (splits["train"].text_pairs or []))
            model, note = _new_model(options, tokenizer, len(label_names))
        encoding = TextEncoding.for_model(model, tokenizer, options.max_len, options.truncation, pairs)
        train_ids, train_segments = encoding.encode(tokenizer, splits["train"].texts, splits["train"].text_pairs,
                                                    "training text")
        valid_ids, valid_segments = encoding.encode(tokenizer, splits["valid"].texts, splits["valid"].text_pairs,
                                                    "validation text")
        batches = ClassificationBatches(train_ids, splits["train"].labels, options.batch_size, seed=options.train.seed,
                                        rank=context.dist.rank, world_size=context.dist.world_size,
                                        segments=train_segments)
        valid_labels = torch.tensor(splits["valid"].labels)

        def evaluate(m: nn.Module) -> float:
            probs = score_sequences(m, valid_ids, options.eval_batch_size, valid_segments)
            return F.nll_loss(probs.clamp_min(1e-12).log(), valid_labels).item()

        model_config = model.config.to_dict()
        mean_len = sum(map(len, train_ids)) / len(train_ids)
        return Prepared(
            model=model,
            batches=batches,
            evaluate=evaluate,
            saved_config={
                "model": model_config,
                "labels": label_names,
                "text": {"tokenizer": tokenizer.kind, "max_len": options.max_len, "truncation": options.truncation,
                         **encoding.to_dict(), **(tokenizer.cleaner.to_dict() if tokenizer.cleaner else {})},
                "data": _data_section(options, splits, vocab_size=options.vocab_size, oov_buckets=options.oov_buckets,
                                      embeddings=options.embeddings),
            },
            describe=f"{model.config.describe()}, {trained_parameters(model):,} trained parameters, "
                     f"{model.embedding.num_embeddings:,} embedding rows, {len(train_ids):,} training texts "
                     f"({mean_len:.0f} tokens on average){_held_out(splits)}, labels {label_names}" + (f", {note}" if note else ""),
            write_extras=tokenizer.save_pretrained,
            param_groups=discriminative_groups(model, options.embedding_lr_scale, options.layer_lr_decay),
            finish=_report_validation(context, model_config, splits["valid"],
                                      lambda best: score_sequences(best, valid_ids, options.eval_batch_size, valid_segments)),
        )


def train(options: ClassifyTrainOptions) -> dict:
    """Train a classifier; returns the trainer's summary plus validation metrics of the best model."""
    return run_training(ClassifyRecipe(), options)


def _data_section(options: ClassifyTrainOptions, splits: dict[str, LabeledTexts], **settings) -> dict:
    """config.json's "data": the data and how it was split (for a user's file, its path, fractions, rows and
    sha256, so `evaluate` holds out the same test rows), and the run's data `settings`."""
    return {"data": options.data, "split_seed": options.split_seed, "valid_fraction": options.valid_fraction,
            **settings, "batch_size": options.batch_size, **splits["train"].meta.get("split", {})}


def _held_out(splits: dict[str, LabeledTexts]) -> str:
    """", N validation and M test texts held out" for the log."""
    test = f" and {len(splits['test']):,} test" if "test" in splits else ""
    return f", {len(splits['valid']):,} validation{test} texts held out"


def _report_validation(context: RunContext, model_config: dict, valid: LabeledTexts,
                       score: Callable[[nn.Module], torch.Tensor]) -> Callable[[dict, Trainer], dict]:
    """`Prepared.finish`: the best checkpoint (as saved, read back) scored on the validation split, its
    metrics added to the summary as "valid" and its accuracy logged."""

    def finish(summary: dict, trainer: Trainer) -> dict:
        if context.dist.is_main:
            best = load_weights(build_model(model_config), context.out).to(context.device)
            summary["valid"] = classification_metrics(valid.labels, score(best))
            trainer.progress.message(f"validation accuracy {summary['valid']['accuracy']:.4f} on {summary['valid']['n']} texts")
        return summary

    return finish


def _prepare_sentence_head(options: ClassifyTrainOptions, context: RunContext, splits: dict[str, LabeledTexts]) -> Prepared:
    """Frozen MiniLM sentence vectors, computed once, under a small head trained by the shared loop."""
    for name in ("train", "valid"):
        encode_texts(NoTokenizer, splits[name].texts, None, f"{name} text")  # empty texts fail before the slow part
    encoder = SentenceEncoder.from_package(options.encoder_max_length).to(context.device)
    label_names = splits["train"].label_names
    progress = Progress(enabled=options.progress and context.dist.is_main)
    progress.message(f"encoding {len(splits['train']) + len(splits['valid']):,} texts with frozen MiniLM "
                     f"(up to {options.encoder_max_length} tokens each)")
    features = {name: encoder.encode(splits[name].texts, batch_size=options.eval_batch_size // 2 or 1)
                for name in ("train", "valid")}  # (N, D) each
    config = SentenceHeadConfig(dim=encoder.dim, num_classes=len(label_names), hidden=options.head_hidden,
                                dropout=options.model.get("dropout", 0.1), max_length=options.encoder_max_length)
    head = SentenceHead(config)
    batches = FeatureBatches(features["train"], splits["train"].labels, options.batch_size, seed=options.train.seed,
                             rank=context.dist.rank, world_size=context.dist.world_size)
    valid_features, valid_labels = features["valid"].to(context.device), torch.tensor(splits["valid"].labels).to(context.device)

    def evaluate(m: nn.Module) -> float:
        return F.cross_entropy(m(valid_features).float(), valid_labels).item()

    shape = f"{config.hidden} hidden units" if config.hidden else "linear"
    return Prepared(
        model=head,
        batches=batches,
        evaluate=evaluate,
        saved_config={
            "model": config.to_dict(),
            "labels": label_names,
            "text": {"tokenizer": NoTokenizer.kind, "max_len": None},
            "data": _data_section(options, splits),
        },
        describe=f"sentence head ({shape}) over frozen MiniLM vectors of {encoder.dim} dimensions, "
                 f"{trained_parameters(head):,} trained parameters, {len(splits['train']):,} training texts{_held_out(splits)}, "
                 f"labels {label_names}",
        finish=_report_validation(context, config.to_dict(), splits["valid"],
                                  lambda best: score_features(best, features["valid"])),
    )


def _from_language_model(options: ClassifyTrainOptions, num_classes: int) -> tuple[nn.Module, object, str]:
    """ULMFiT-style: a classifier whose tokenizer, embedding and recurrent (or Transformer) layers are a
    `folio lm` checkpoint's (read once: `folio.models.classifier.from_language_model`), and a note for the log.
    The architecture is the checkpoint's; pooling, dropout and masking are this run's."""
    lm, vocab, _ = load_checkpoint(options.init_from, "lm")
    _check_padded(vocab, f"--init-from {options.init_from}", "language model")
    model_dict = dict(options.model)
    model, loaded = from_language_model(lm, num_classes, model_dict.get("pooling"), model_dict.get("dropout", 0.1),
                                        model_dict.get("masking", True), str(options.init_from))
    context = getattr(lm.config, "context", None)  # a Transformer's positions
    if context is not None and (options.max_len is None or options.max_len > context):
        asked = f"--max-len {options.max_len}" if options.max_len else "--max-len 0 (every token)"
        raise ConfigError(f"{asked} is longer than the language model's context ({context}); give --max-len "
                          f"{context} or less")
    return model, vocab, f"{loaded} from the language model in {options.init_from}"


def _check_padded(vocab, flag: str, what: str) -> None:
    """A classifier pads its batches with id 0, which a character vocabulary does not reserve."""
    if vocab.kind == "char":
        raise ConfigError(f"{flag}: a character-level {what} has no padding id; "
                          "pretrain one with --tokenizer word or --tokenizer bpe")


def _over_bilm(options: ClassifyTrainOptions, num_classes: int) -> tuple[ELMoClassifier, object, str]:
    """ELMo: a recurrent classifier over a frozen biLM's layers (the biLM's tokenizer and weights, read
    once and stored in the classifier's checkpoint), with the layer mix learned by the task."""
    from folio.tasks.embed.contextual import ContextualEmbedder

    elmo = ContextualEmbedder.from_pretrained(options.features)
    _check_padded(elmo.vocab, f"--features {options.features}", "biLM")
    classifier = ClassifierConfig(vocab_size=len(elmo.vocab), num_classes=num_classes, extra_features=elmo.dim,
                                  **_glove_sized(options, dict(options.model), elmo.vocab.kind))
    config = ELMoClassifierConfig(elmo.model.config.to_dict(), classifier.to_dict(), features=str(options.features))
    model = ELMoClassifier(config)
    model.bilm.load_state_dict(elmo.model.state_dict())
    glove = _load_glove(options, model.classifier, elmo.vocab)  # Peters et al.'s task models: [GloVe; ELMo]
    return model, elmo.vocab, (f"the ELMo mix of the frozen biLM in {options.features} ({elmo.layers} layers of "
                               f"{elmo.dim})" + (f", {glove}" if glove else ""))


def _new_model(options: ClassifyTrainOptions, tokenizer, num_classes: int) -> tuple[RecurrentClassifier | TransformerClassifier, str]:
    """A fresh classifier for `tokenizer`, pretrained parts loaded; and a note on them for the log."""
    model_dict = dict(options.model)
    if options.transformer:
        dropout, pooling = model_dict.get("dropout", 0.1), model_dict.get("pooling", "mean")
        if options.init_from == "minilm":
            bert = load_bert(minilm_directory(), dropout)
            config = TransformerClassifierConfig(bert.config.to_dict(), num_classes, pooling, dropout, init_from="minilm")
            model = TransformerClassifier(config)
            model.bert = bert  # the loaded encoder itself, not a second copy of its weights
            return model, "pretrained MiniLM weights loaded"
        config = TransformerClassifierConfig.small(
            len(tokenizer), num_classes, model_dict.get("layers", 4), model_dict.get("hidden", 256), model_dict.get("heads", 4),
            max_len=options.max_len, dropout=dropout, pooling=pooling)
        return TransformerClassifier(config), ""
    model = RecurrentClassifier(ClassifierConfig(vocab_size=len(tokenizer), num_classes=num_classes,
                                                 **_glove_sized(options, model_dict, options.tokenizer)))
    return model, _load_glove(options, model, tokenizer)


def _glove_sized(options: ClassifyTrainOptions, model_dict: dict, tokenizer_kind: str) -> dict:
    """The recurrent classifier's fields, with GloVe's 50 dimensions where `--embeddings glove` asks for them."""
    if options.embeddings != "glove":
        return model_dict
    if tokenizer_kind != "word":
        raise ConfigError("--embeddings glove needs --tokenizer word (GloVe vectors are for whole words)")
    if model_dict.get("embedding_dim", 50) != 50:
        raise ConfigError(f"--embeddings glove is 50-dimensional; drop --embedding-dim {model_dict['embedding_dim']}")
    return {**model_dict, "embedding_dim": 50}


def _load_glove(options: ClassifyTrainOptions, classifier: RecurrentClassifier, tokenizer) -> str:
    """GloVe vectors into the classifier's embedding where `--embeddings glove` asks; the note for the log."""
    if options.embeddings != "glove":
        return ""
    matrix, found = glove_matrix(tokenizer.symbols, len(tokenizer), seed=options.train.seed)
    classifier.load_embeddings(matrix)
    return f"GloVe vectors for {found:,} of {len(tokenizer.symbols):,} words"


def discriminative_groups(model: RecurrentClassifier | TransformerClassifier, pretrained_scale: float = 1.0,
                          layer_decay: float = 1.0) -> list[dict]:
    """Optimizer parameter groups with discriminative learning rates.

    The pretrained part (word embeddings of a recurrent model, the whole encoder of a Transformer) learns
    at lr × `pretrained_scale`; and with ULMFiT's `layer_decay` every layer below the head learns
    `layer_decay` times slower than the one above it: the head at lr, the top recurrent layer or block
    at lr / decay, …, the embedding at lr / decay^(layers + 1).

    >>> model = RecurrentClassifier(ClassifierConfig(vocab_size=20, layers=1, hidden=8, bidirectional=False))
    >>> [g["lr_scale"] for g in discriminative_groups(model, layer_decay=2.0)]  # head, GRU, embedding
    [1.0, 0.5, 0.25]
    """
    pretrained = ("bert.", "gpt.", "pooler.", "embedding.")  # a Transformer's trunk; a recurrent model's embedding
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depth = {n: int(m.group(1)) + 1 if (m := re.search(r"(?:rnns|blocks)\.(\d+)\.", n)) else 0 for n, _ in named}
    top = max(depth.values(), default=0) + 1
    for name, _ in named:
        if name.startswith(("head.", "gpt.norm.", "pooler.")):  # above the last block
            depth[name] = top
    groups: dict[float, list] = {}
    for name, param in named:
        scale = layer_decay ** -(top - depth[name]) * (pretrained_scale if name.startswith(pretrained) else 1.0)
        groups.setdefault(scale, []).append(param)
    return [{"params": params, "lr_scale": scale} for scale, params in sorted(groups.items(), reverse=True)]
