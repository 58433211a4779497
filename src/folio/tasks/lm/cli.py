"""`folio lm`: train, sample, evaluate, attention."""

from __future__ import annotations

import argparse
import json
import sys

from folio.data.corpora import load_corpus, split_text
from folio.flags import (
    Formatter,
    add_training_flags,
    is_worker,
    positive_float,
    positive_int,
    train_config_from,
    unit_float,
)
from folio.tasks.lm.inference import LanguageModel
from folio.tasks.lm.options import LMTrainOptions
from folio.tasks.lm.recipe import train


def _lm_train(args) -> int:
    model = {"arch": args.arch, "layers": args.layers, "hidden": args.hidden, "dropout": args.dropout}
    if args.arch == "gpt":
        model.update(heads=args.heads, context=args.context or args.seq_len, positions=args.positions,
                     inner_dropout=args.inner_dropout)
    elif args.arch == "bert":
        model.update(heads=args.heads, context=args.context or args.seq_len, mask_prob=args.mask_prob)
    else:
        model.update(embedding_dim=args.embedding_dim, output_dropout=args.output_dropout)
    options = LMTrainOptions(
        corpus=args.corpus, out=args.out, lower=args.lower, model=model,
        tokenizer=args.tokenizer, vocab_size=args.vocab_size, oov_buckets=args.oov_buckets,
        seq_len=args.seq_len, batch_size=args.batch_size, stateful=args.stateful,
        train=train_config_from(args), device=args.device, resume=args.resume, progress=not args.quiet,
    )
    train(options)
    if args.sample_temperatures and args.arch != "bert" and not is_worker():
        lm = LanguageModel.from_pretrained(args.out)
        prompt = args.sample_prompt
        for temperature in args.sample_temperatures:
            print(f"\n--- sample at temperature {temperature} ---")
            print(lm.generate(prompt, max_new_tokens=args.sample_length, temperature=temperature, seed=args.seed))
    return 0


def _lm_sample(args) -> int:
    lm = LanguageModel.from_pretrained(args.model, device=args.device)
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop)
    for i in range(0, args.num_samples, args.batch):
        count = min(args.batch, args.num_samples - i)
        if args.stream:
            sys.stdout.write(args.prompt)
            for pieces in lm.stream(args.prompt, args.length, num_samples=1, **options):
                sys.stdout.write(pieces[0])
                sys.stdout.flush()
            sys.stdout.write("\n")
            continue
        texts = lm.generate(args.prompt, args.length, num_samples=count, **options)
        for text in [texts] if count == 1 else texts:
            print(text)
            if args.num_samples > 1:
                print("---")
        if options["seed"] is not None:
            options["seed"] += 1
    return 0


def _lm_evaluate(args) -> int:
    lm = LanguageModel.from_pretrained(args.model, device=args.device)
    text = load_corpus(args.corpus)
    split = lm.config.get("data", {}).get("split", [0.9, 0.05, 0.05]) if args.split != "all" else None
    part = text if split is None else split_text(text, tuple(split))[args.split]
    report = {"split": args.split, "corpus": args.corpus, "streams": args.streams,
              **lm.evaluate(part, streams=args.streams)}
    if args.json:
        print(json.dumps(report))
    else:
        unit = {"char": "char", "word": "word", "bpe": "BPE token"}.get(report["level"], "token")
        what = "masked-token loss" if lm.config.get("model", {}).get("arch") == "bert" else "loss"
        print(f"{args.split}: {what} {report['loss']:.4f} nats/{unit}, {report['bits_per_char']:.4f} bits/{unit}, "
              f"perplexity {report['perplexity']:.3f}, {report['tokens']:,} {unit}s")
    return 0


def _lm_attention(args) -> int:
    lm = LanguageModel.from_pretrained(args.model)
    lm.plot_attention(args.text, args.out, layer=args.layer, head=args.head)
    print(f"wrote {args.out}")
    return 0


def add_cli(parser: argparse.ArgumentParser) -> None:
    """`folio lm train|sample|evaluate|attention`."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a language model", formatter_class=Formatter,
                         description="Train a GRU/LSTM or GPT language model (then print samples), or pretrain a BERT "
                                     "encoder with masked LM, on characters, words or byte-level BPE tokens.")
    t.add_argument("--corpus", default="shakespeare", help="shakespeare (embedded), tinyshakespeare (downloaded), "
                   "imdb (the classifier's training reviews, for ULMFiT-style pretraining) or a UTF-8 file")
    t.add_argument("--out", default="runs/lm", help="model directory")
    t.add_argument("--arch", choices=["gru", "lstm", "gpt", "bert"], default="gru",
                   help="recurrent, a decoder-only Transformer, or a BERT encoder pretrained by masked LM")
    t.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char",
                   help="characters; words (the classifier's cleaning, top --vocab-size + hashed buckets); byte-level BPE")
    t.add_argument("--vocab-size", type=positive_int, default=8000, help="words or BPE tokens (not used for characters)")
    t.add_argument("--oov-buckets", type=positive_int, default=1000, help="hashed buckets for unknown words (--tokenizer word)")
    t.add_argument("--mask-prob", type=unit_float, default=0.15, help="masked positions (bert: 80%% [MASK], 10%% random, 10%% kept)")
    t.add_argument("--layers", type=positive_int, default=2)
    t.add_argument("--hidden", type=positive_int, default=128, help="recurrent state size, or the GPT's width")
    t.add_argument("--embedding-dim", type=int, default=0, help="0: one-hot input (recurrent models)")
    t.add_argument("--dropout", type=float, default=0.2)
    t.add_argument("--output-dropout", type=float, default=None,
                   help="dropout before the output layer (recurrent models; default: --dropout)")
    t.add_argument("--heads", type=positive_int, default=4, help="attention heads (gpt, bert)")
    t.add_argument("--context", type=positive_int, default=None, help="positions attended over (gpt, bert; default: --seq-len)")
    t.add_argument("--inner-dropout", type=float, default=None,
                   help="gpt: dropout on attention weights and feed-forward hidden units (default: --dropout); "
                        "--dropout acts on the embeddings and each sub-layer's output")
    t.add_argument("--positions", choices=["learned", "sinusoidal", "rope"], default="learned",
                   help="position encoding (gpt): learned or sinusoidal vectors added to the embeddings, or rotary (RoPE) in attention")
    t.add_argument("--seq-len", type=positive_int, default=100)
    t.add_argument("--batch-size", type=positive_int, default=32)
    t.add_argument("--stateful", action=argparse.BooleanOptionalAction, default=False,
                   help="carry the hidden state across batches (recurrent models)")
    t.add_argument("--lower", action="store_true", help="lower-case the corpus, as in the book (char and word)")
    t.add_argument("--sample-temperatures", type=positive_float, nargs="*", default=[0.2, 1.0, 2.0],
                   help="print a sample at each temperature after training")
    t.add_argument("--sample-prompt", default="ROMEO:")
    t.add_argument("--sample-length", type=positive_int, default=300)
    add_training_flags(t, lr=3e-3, max_time=180.0)
    t.set_defaults(func=_lm_train)

    s = verbs.add_parser("sample", help="generate text", formatter_class=Formatter)
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--prompt", default="\n")
    s.add_argument("--length", type=positive_int, default=500, help="characters to generate")
    s.add_argument("--temperature", type=positive_float, default=1.0)
    s.add_argument("--top-k", type=positive_int, default=None)
    s.add_argument("--top-p", type=unit_float, default=None)
    s.add_argument("--num-samples", type=positive_int, default=1)
    s.add_argument("--batch", type=positive_int, default=32, help="samples generated together")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--stop", action="append", default=None, help="stop at this string (repeatable)")
    s.add_argument("--stream", action="store_true", help="print characters as they are produced")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=_lm_sample)

    e = verbs.add_parser("evaluate", help="loss, bits per char and perplexity on a split", formatter_class=Formatter)
    e.add_argument("--model", required=True)
    e.add_argument("--corpus", default="shakespeare")
    e.add_argument("--split", choices=["train", "valid", "test", "all"], default="test")
    e.add_argument("--streams", type=positive_int, default=1,
                   help="read the split as this many contiguous streams; 1 (the usual test protocol) gives every "
                        "character all the text before it as context, more streams run faster")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=_lm_evaluate)

    a = verbs.add_parser("attention", help="PNG heatmaps of a GPT's attention over a text", formatter_class=Formatter)
    a.add_argument("--model", required=True)
    a.add_argument("--text", required=True, help="the text to look at (at most the model's context)")
    a.add_argument("--layer", type=int, default=-1, help="which layer (-1: the last)")
    a.add_argument("--head", type=int, default=None, help="one head (default: all heads side by side)")
    a.add_argument("--out", default="attention.png", help="PNG file to write")
    a.set_defaults(func=_lm_attention)
