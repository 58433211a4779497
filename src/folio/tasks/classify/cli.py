"""`folio classify`: its verbs and flags."""

from __future__ import annotations

import argparse
import json
import sys

from folio.data.reviews import read_text_records
from folio.data.splits import EVALUATION_SPLITS
from folio.errors import ConfigError, DataError
from folio.flags import (
    Formatter,
    integer,
    positive_float,
    positive_int,
    read_stdin_lines,
    seed,
    unit_float,
    utf8_text,
)
from folio.models.options import add_model_flags, model_from_flags
from folio.render import explanation_ansi, explanation_html
from folio.tasks.classify.data import evaluation_split
from folio.tasks.classify.inference import TextClassifier
from folio.tasks.classify.options import ClassifyTrainOptions
from folio.tasks.classify.recipe import train
from folio.training.checkpoint import write_atomic
from folio.training.flags import add_training_flags, train_config_from


def _labels_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two comma-separated labels")
    return names


# `--arch` → the registry's arch (a recurrent classifier's cell is its `arch` in the "model" options)
ARCHS = {"gru": "rnn_classifier", "lstm": "rnn_classifier", "transformer": "transformer_classifier"}
FROM_LANGUAGE_MODEL = ("pooling", "dropout", "masking")  # with --init-from LM_DIR: the run's; the rest is the LM's


def _cli_train(args) -> int:
    if args.init_from not in (None, "minilm"):  # the language model decides the architecture (of either kind)
        own = model_from_flags(args, {"gru": ARCHS["gru"]}, "gru")  # (its other flags are not checked: it has them all)
        model = {name: own[name] for name in FROM_LANGUAGE_MODEL if name in own}
    else:
        model = {"arch": args.arch, **model_from_flags(args, ARCHS)}
    options = ClassifyTrainOptions(
        data=args.data, out=args.out,
        text={"max_chars": args.max_chars, "lower": not args.no_lower, "level": args.level},
        tokenizer=args.tokenizer, vocab_size=args.vocab_size, oov_buckets=args.oov_buckets,
        max_len=args.max_len or None, truncation=args.truncation, embeddings=None if args.embeddings == "none" else args.embeddings,
        embedding_lr_scale=args.embedding_lr_scale, layer_lr_decay=args.layer_lr_decay, model=model, encoder=args.encoder, init_from=args.init_from,
        features=args.features,
        head_hidden=args.head_hidden,
        encoder_max_length=args.encoder_max_length, batch_size=args.batch_size, labels=args.labels,
        valid_fraction=args.valid_fraction, split_seed=args.split_seed, reber_size=args.reber_size,
        train=train_config_from(args), device=args.device, resume=args.resume, progress=not args.quiet,
    )
    summary = train(options)
    if "valid" in summary:
        print(json.dumps({"valid": summary["valid"], "steps": summary["steps"], "elapsed": round(summary["elapsed"], 1)}))
    return 0


def _read_inputs(args, pairs: bool = False) -> tuple[list[str], list[str] | None]:
    """The texts to classify (arguments, --file, or stdin's lines), and their pairs where --file holds pairs."""
    if pairs and (args.texts or not args.file):
        raise DataError("this model classifies pairs of texts: give them in --file FILE (CSV columns text,text_pair; "
                        "or JSONL fields \"text\", \"text_pair\")")
    texts, text_pairs = list(args.texts), None
    if args.file:
        file_texts, text_pairs = read_text_records(args.file)
        if text_pairs is not None and texts:
            raise DataError(f"{args.file} holds pairs of texts: give no texts beside it")
        texts += file_texts
    if not texts:
        if sys.stdin.isatty():
            raise DataError("no text to classify: give texts as arguments, --file PATH, or lines on stdin")
        texts = [line for line in read_stdin_lines() if line.strip()]
        if not texts:
            raise DataError("stdin held no text to classify (only empty lines)")
    return texts, text_pairs


def _cli_predict(args) -> int:
    clf = TextClassifier.from_pretrained(args.model, device=args.device)
    texts, text_pairs = _read_inputs(args, clf.pairs)
    results = clf.predict(texts, batch_size=args.batch_size, text_pairs=text_pairs)  # all scored before any is printed
    for i, (text, result) in enumerate(zip(texts, results, strict=True)):
        if args.json:
            pair = {} if text_pairs is None else {"text_pair": text_pairs[i]}
            print(json.dumps({"text": text, **pair, **result}, ensure_ascii=False))
        else:
            snippet = " ".join(text.split()) if text_pairs is None else f"{' '.join(text.split())} | {' '.join(text_pairs[i].split())}"
            snippet = snippet if len(snippet) <= 70 else snippet[:67] + "..."
            print(f"{result['label']}\t{result['probability']:.4f}\t{snippet}")
    return 0


def _cli_evaluate(args) -> int:
    clf = TextClassifier.from_pretrained(args.model, device=args.device)
    data, data_spec, warning = evaluation_split(clf.config.get("data", {}), args.data, args.split, clf.labels)
    if warning:
        print(f"folio: warning: {warning}", file=sys.stderr)
    report = {**clf.evaluate(data, batch_size=args.batch_size), "data": data_spec, "split": args.split}
    if args.json:
        print(json.dumps(report))
    else:
        auc = "n/a" if report["roc_auc"] is None else f"{report['roc_auc']:.4f}"
        print(f"{data_spec} ({args.split}, {report['n']} texts): accuracy {report['accuracy']:.4f}, precision "
              f"{report['precision']:.4f}, recall {report['recall']:.4f}, f1 {report['f1']:.4f}, ROC AUC {auc}")
        print(f"confusion matrix (rows: true {clf.labels}, columns: predicted): {report['confusion_matrix']}")
    return 0


def _cli_explain(args) -> int:
    clf = TextClassifier.from_pretrained(args.model, device=args.device)
    if args.target is not None and args.target not in clf.labels:
        raise ConfigError(f"--target {args.target!r} is not one of the model's labels {clf.labels}")
    explanation = clf.explain(args.text, steps=args.steps, target=args.target)
    if args.html:
        write_atomic(args.html, explanation_html(explanation))
    if args.json:
        print(json.dumps(explanation))
    elif not args.html:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        print(explanation_ansi(explanation, color=color))
    return 0


def add_cli(parser: argparse.ArgumentParser) -> None:
    """`folio classify train|predict|evaluate|explain`, added to the `folio classify` parser."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a recurrent classifier", formatter_class=Formatter,
                         description="Train embedding → (bi)GRU/LSTM → pooling → dense head on labelled texts.")
    t.add_argument("--data", default="imdb", help="imdb, rt, reber (embedded), aclimdb (download), an aclImdb directory, "
                   "or a CSV/JSONL file with text,label (or text,text_pair,label: pairs of texts, for a BERT encoder)")
    t.add_argument("--out", default="runs/classify", help="model directory")
    t.add_argument("--labels", type=_labels_arg, default=None, help="comma-separated label names the data must use")
    t.add_argument("--valid-fraction", type=unit_float, default=0.1,
                   help="the validation share (of a CSV/JSONL file, which also holds out 0.1 as its test split)")
    t.add_argument("--split-seed", type=seed, default=0, help="seed of the held-out test and validation splits")
    t.add_argument("--reber-size", type=positive_int, default=10_000, help="generated training strings for --data reber")
    text = t.add_argument_group("text")
    text.add_argument("--max-chars", type=positive_int, default=None, help="keep each text's first N characters (the book: 300)")
    text.add_argument("--no-lower", action="store_true", help="keep case (the book's choice)")
    text.add_argument("--level", choices=["word", "char"], default="word")
    text.add_argument("--tokenizer", choices=["word", "subword"], default="word")
    text.add_argument("--vocab-size", type=positive_int, default=20_000, help="top-V words (the book: 10000) or subword vocabulary size")
    text.add_argument("--oov-buckets", type=positive_int, default=1000, help="hashed buckets for unknown words")
    text.add_argument("--max-len", type=integer, default=400, help="tokens kept per text; 0 keeps all")
    text.add_argument("--truncation", choices=["head", "head_tail"], default="head",
                      help="a longer text keeps its first tokens, or its first quarter and last three quarters")
    m = t.add_argument_group("model")
    m.add_argument("--arch", choices=list(ARCHS), default="gru", help="recurrent, or a BERT-style encoder")
    m.add_argument("--init-from", default=None, metavar="minilm|LM_DIR",
                   help="minilm (with --arch transformer): fine-tune the pretrained MiniLM encoder (its own tokenizer); "
                        "LM_DIR: a word- or BPE-level `folio lm` checkpoint (GRU/LSTM, GPT or BERT) whose tokenizer, "
                        "embedding and layers start the classifier (ULMFiT); its architecture replaces --arch/--layers/--hidden; "
                        "a BERT pretrained with --objective mlm+nsp brings its [CLS] pooler too (--pooling cls, the default)")
    m.add_argument("--features", default=None, metavar="BILM_DIR",
                   help="ELMo: a word- or BPE-level biLM (folio lm train --arch bilm), frozen, whose layers the "
                        "classifier reads beside its own embedding, mixed with weights it learns (its tokenizer is "
                        "the biLM's)")
    add_model_flags(m, ARCHS)
    m.add_argument("--embeddings", choices=["none", "glove"], default="none", help="pretrained word vectors")
    m.add_argument("--encoder", choices=["minilm"], default=None,
                   help="instead of the recurrent model: frozen MiniLM sentence vectors under a small trained head")
    m.add_argument("--head-hidden", type=integer, default=0, help="with --encoder: hidden units of the head (0: linear)")
    m.add_argument("--encoder-max-length", type=positive_int, default=256, help="with --encoder: tokens per text")
    m.add_argument("--embedding-lr-scale", type=positive_float, default=1.0,
                   help="lr of the embedding (recurrent) or of the whole encoder (transformer) = lr × this")
    m.add_argument("--layer-lr-decay", type=positive_float, default=1.0,
                   help="discriminative learning rates (ULMFiT: 2.6): each layer below the head learns at the lr of the one above / this")
    t.add_argument("--batch-size", type=positive_int, default=64)
    add_training_flags(t, lr=3e-3, max_time=600.0)
    t.set_defaults(func=_cli_train)

    p = verbs.add_parser("predict", help="label and probability for each text", formatter_class=Formatter)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("texts", nargs="*", type=utf8_text, help="texts to classify (default: lines of stdin)")
    p.add_argument("--file", default=None, help="a CSV or JSONL file with a text field (and text_pair, for a model "
                   "of pairs of texts)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cli_predict)

    e = verbs.add_parser("evaluate", help="accuracy, precision, recall, f1, ROC AUC, confusion matrix", formatter_class=Formatter)
    e.add_argument("--model", required=True)
    e.add_argument("--data", default=None, help="default: the model's training data")
    e.add_argument("--split", choices=EVALUATION_SPLITS, default="test",
                   help="which split of the data to score: a CSV/JSONL file is split as training split it "
                        "(80/10/10, stratified, the saved seed); all: every row")
    e.add_argument("--batch-size", type=positive_int, default=128)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=_cli_evaluate)

    x = verbs.add_parser("explain", help="per-token contributions (integrated gradients)", formatter_class=Formatter)
    x.add_argument("--model", required=True)
    x.add_argument("text", type=utf8_text)
    x.add_argument("--target", type=utf8_text, default=None, help="label to explain (default: the predicted one)")
    x.add_argument("--steps", type=positive_int, default=50, help="integrated-gradients steps")
    x.add_argument("--html", default=None, metavar="PATH", help="write an HTML page instead of terminal colours")
    x.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    x.add_argument("--json", action="store_true")
    x.add_argument("--device", default="cpu")
    x.set_defaults(func=_cli_explain)


