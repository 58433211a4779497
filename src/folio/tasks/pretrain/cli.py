"""`folio pretrain`: train, evaluate (`folio lm train --arch bert|bilm` and `folio lm evaluate` of an encoder
hand over to these)."""

from __future__ import annotations

import argparse
import json

from folio.flags import Formatter
from folio.models.options import add_model_flags, model_from_flags
from folio.tasks.lm.cli import add_corpus_flags, corpus_options, loss_line
from folio.tasks.lm.data import split_ids
from folio.tasks.pretrain.inference import PretrainedEncoder
from folio.tasks.pretrain.options import PretrainOptions
from folio.tasks.pretrain.recipe import train
from folio.training.flags import add_training_flags

ARCHS = ("bert", "bilm")


def train_from_args(args, archs: tuple[str, ...] = ARCHS) -> int:
    """`folio pretrain train` (and `folio lm train --arch bert|bilm`, whose `archs` are folio lm's): an encoder
    prints no samples."""
    train(PretrainOptions(model={"arch": args.arch, **model_from_flags(args, archs)}, **corpus_options(args)))
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
    add_corpus_flags(t, out="runs/pretrain")
    add_model_flags(t.add_argument_group("model (each flag names the archs it applies to)"), ARCHS)
    add_training_flags(t, lr=3e-3, max_time=180.0)
    t.set_defaults(func=train_from_args)

    e = verbs.add_parser("evaluate", help="the pretraining objective's loss on a split", formatter_class=Formatter)
    e.add_argument("--model", required=True, help="a model directory (folio pretrain train --out)")
    e.add_argument("--corpus", default="shakespeare")
    e.add_argument("--split", choices=["train", "valid", "test", "all"], default="test")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=evaluate_from_args)
