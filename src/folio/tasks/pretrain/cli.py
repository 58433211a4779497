"""`folio pretrain`: train, evaluate (`folio lm train --arch bert|bilm` and `folio lm evaluate` of an encoder
hand over to these)."""

from __future__ import annotations

import argparse
import json

from folio.errors import ConfigError
from folio.flags import Formatter, non_negative_int, unit_float
from folio.tasks.lm.cli import add_corpus_flags, add_shape_flags, base_model, corpus_options, loss_line
from folio.tasks.lm.data import split_ids
from folio.tasks.pretrain.inference import PretrainedEncoder
from folio.tasks.pretrain.options import PretrainOptions
from folio.tasks.pretrain.recipe import train
from folio.training.flags import add_training_flags

ARCHS = ("bert", "bilm")


def add_objective_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the pretraining objectives (also on `folio lm train`, which hands --arch bert|bilm over)."""
    parser.add_argument("--objective", choices=["mlm", "mlm+nsp"], default="mlm",
                        help="bert: masked LM over windows of text, or masked LM plus next-sentence prediction over "
                             "[CLS] A [SEP] B [SEP] sentence pairs (documents: the reviews of --corpus imdb, or the "
                             "blank-line-separated paragraphs of a file)")
    parser.add_argument("--mask-prob", type=unit_float, default=0.15,
                        help="masked positions (bert: 80%% [MASK], 10%% random, 10%% kept)")
    parser.add_argument("--char-cnn", action="store_true",
                        help="bilm: build each token's vector from its characters (ELMo's convolutions and highway "
                             "layers), so unseen words get vectors too; default: an embedding table")
    parser.add_argument("--softmax-samples", type=non_negative_int, default=0, metavar="N",
                        help="bilm: train with a sampled softmax over N log-uniform token ids, as ELMo (several times "
                             "faster on a large vocabulary; evaluation uses the full softmax); 0: the full softmax")


def check_objective_flags(args) -> None:
    """Each objective's flags go with its arch (said before any data is read)."""
    if args.objective != "mlm" and args.arch != "bert":
        raise ConfigError(f"--objective {args.objective} pretrains a BERT encoder: add --arch bert")
    if args.softmax_samples and args.arch != "bilm":
        raise ConfigError(f"--softmax-samples trains a biLM's softmax (--arch bilm), not --arch {args.arch}'s")


def train_from_args(args) -> int:
    """`folio pretrain train` (and `folio lm train --arch bert|bilm`): an encoder prints no samples."""
    check_objective_flags(args)
    own = (dict(heads=args.heads, context=args.context or args.seq_len, mask_prob=args.mask_prob,
                objective=args.objective) if args.arch == "bert"
           else dict(char_cnn=args.char_cnn, softmax_samples=args.softmax_samples))
    train(PretrainOptions(model={**base_model(args), **own}, **corpus_options(args)))
    return 0


def evaluate_from_args(args) -> int:
    """`folio pretrain evaluate` (and `folio lm evaluate` of an encoder): the objective's loss on a split, and
    next-sentence figures on its documents' pairs for a BERT pretrained with them."""
    encoder = PretrainedEncoder.from_pretrained(args.model, device=args.device)
    report = {"split": args.split, "corpus": args.corpus,
              **encoder.evaluate_ids(split_ids(args.corpus, encoder.config, encoder.vocab, args.split)[0])}
    if getattr(encoder.model.config, "nsp", False):  # and BERT's other figure, on sentence pairs
        report.update(encoder.evaluate_sentence_pairs(args.corpus, args.split))
    if args.json:
        print(json.dumps(report))
        return 0
    print(loss_line(report, "masked-token loss" if encoder.model.kind == "masked" else "loss"))
    if "nsp_accuracy" in report:
        print(f"{args.split}: next-sentence accuracy {report['nsp_accuracy']:.4f} on {report['pairs']:,} pairs "
              f"(loss {report['nsp_loss']:.4f}); masked-token loss on their tokens {report['masked_loss']:.4f}")
    return 0


def add_cli(parser: argparse.ArgumentParser) -> None:
    """`folio pretrain train|evaluate`."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="pretrain an encoder", formatter_class=Formatter,
                         description="Pretrain a BERT encoder with masked LM (and next-sentence prediction), or ELMo's "
                                     "bidirectional LSTM language model, on characters, words or byte-level BPE tokens.")
    t.add_argument("--arch", choices=ARCHS, default="bert",
                   help="a BERT encoder (folio classify train --init-from reads it), or ELMo's biLM (folio embed and "
                        "folio classify train --features read it)")
    add_objective_flags(t)
    add_corpus_flags(t, out="runs/pretrain")
    add_shape_flags(t)
    add_training_flags(t, lr=3e-3, max_time=180.0)
    t.set_defaults(func=train_from_args)

    e = verbs.add_parser("evaluate", help="the pretraining objective's loss on a split", formatter_class=Formatter)
    e.add_argument("--model", required=True, help="a model directory (folio pretrain train --out)")
    e.add_argument("--corpus", default="shakespeare")
    e.add_argument("--split", choices=["train", "valid", "test", "all"], default="test")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=evaluate_from_args)
