"""`folio <task> <verb>`: parses flags into a task's options and calls the task. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import math
import sys

from folio.errors import ConfigError, FolioError


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """Bad flags get one line naming the problem (and where help is), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def unit_float(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def add_training_flags(parser: argparse.ArgumentParser, lr: float, max_time: float | None) -> None:
    """Flags of the shared training loop, the same for every task."""
    group = parser.add_argument_group("training")
    group.add_argument("--lr", type=positive_float, default=lr, help="peak learning rate (AdamW)")
    group.add_argument("--weight-decay", type=float, default=0.01)
    group.add_argument("--warmup-steps", type=int, default=100)
    group.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decay ends at lr × this")
    group.add_argument("--schedule", choices=["cosine", "inverse_sqrt"], default="cosine",
                       help="after the warm-up: cosine decay over the run, or lr·√(warmup/step) (Transformer)")
    group.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 disables")
    group.add_argument("--max-steps", type=positive_int, default=None)
    group.add_argument("--max-time", type=positive_float, default=max_time, help="seconds of training")
    group.add_argument("--eval-every", type=positive_int, default=500, help="steps between validations")
    group.add_argument("--patience", type=int, default=0, help="early stopping after N evaluations without improvement (0: off)")
    group.add_argument("--log-every", type=positive_int, default=50)
    group.add_argument("--save-every", type=positive_int, default=500, help="steps between resumable checkpoints")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw",
                       help="muon: Muon for the hidden weight matrices (at --muon-lr), AdamW at --lr for the rest")
    group.add_argument("--muon-lr", type=positive_float, default=0.02, help="peak learning rate of the Muon matrices")
    group.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                       help="bf16: autocast matrix products to bfloat16 (weights, optimizer and loss stay fp32); "
                            "auto: bf16 on CUDA, fp32 elsewhere")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--ema-decay", type=float, default=0.0,
                       help="validate and save an exponential moving average of the weights with this decay (0: off)")
    group.add_argument("--resume", nargs="?", const="", default=None, metavar="DIR",
                       help="continue an interrupted run from DIR (default: OUT/last)")
    group.add_argument("--quiet", action="store_true", help="no progress output")


def train_config_from(args):
    from folio.training.trainer import TrainConfig

    return TrainConfig(
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps, schedule=args.schedule,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, max_steps=args.max_steps, max_time=args.max_time, eval_every=args.eval_every,
        patience=args.patience, log_every=args.log_every, save_every=args.save_every, seed=args.seed,
        precision=args.precision, optimizer=args.optimizer, muon_lr=args.muon_lr, compile=args.compile, ema_decay=args.ema_decay,
    )


# ---- folio lm ----------------------------------------------------------------------------------
def _lm_train(args) -> int:
    from folio.tasks.lm import LanguageModel, LMTrainOptions, train

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
    if args.sample_temperatures and args.arch != "bert" and not _is_worker():
        lm = LanguageModel.from_pretrained(args.out)
        prompt = args.sample_prompt
        for temperature in args.sample_temperatures:
            print(f"\n--- sample at temperature {temperature} ---")
            print(lm.generate(prompt, max_new_tokens=args.sample_length, temperature=temperature, seed=args.seed))
    return 0


def _is_worker() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) != 0


def _lm_sample(args) -> int:
    from folio.tasks.lm import LanguageModel

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
    from folio.data.corpora import load_corpus, split_text
    from folio.tasks.lm import LanguageModel

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
    from folio.tasks.lm import LanguageModel

    lm = LanguageModel.from_pretrained(args.model)
    lm.plot_attention(args.text, args.out, layer=args.layer, head=args.head)
    print(f"wrote {args.out}")
    return 0


def _add_lm(tasks) -> None:
    lm = tasks.add_parser("lm", help="language models: Char-RNN, GPT, masked-LM pretraining", formatter_class=_Formatter)
    verbs = lm.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a language model", formatter_class=_Formatter,
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

    s = verbs.add_parser("sample", help="generate text", formatter_class=_Formatter)
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

    e = verbs.add_parser("evaluate", help="loss, bits per char and perplexity on a split", formatter_class=_Formatter)
    e.add_argument("--model", required=True)
    e.add_argument("--corpus", default="shakespeare")
    e.add_argument("--split", choices=["train", "valid", "test", "all"], default="test")
    e.add_argument("--streams", type=positive_int, default=1,
                   help="read the split as this many contiguous streams; 1 (the usual test protocol) gives every "
                        "character all the text before it as context, more streams run faster")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=_lm_evaluate)

    a = verbs.add_parser("attention", help="PNG heatmaps of a GPT's attention over a text", formatter_class=_Formatter)
    a.add_argument("--model", required=True)
    a.add_argument("--text", required=True, help="the text to look at (at most the model's context)")
    a.add_argument("--layer", type=int, default=-1, help="which layer (-1: the last)")
    a.add_argument("--head", type=int, default=None, help="one head (default: all heads side by side)")
    a.add_argument("--out", default="attention.png", help="PNG file to write")
    a.set_defaults(func=_lm_attention)


# ---- folio embed -------------------------------------------------------------------------------
def _embed(args) -> int:
    from folio.models.sentence_encoder import load_sentence_encoder

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ConfigError("no text to embed: pass TEXT arguments or lines on stdin")
    encoder = load_sentence_encoder(args.model)
    for start in range(0, len(texts), args.batch_size):  # print as we go: a long stdin streams out
        chunk = texts[start : start + args.batch_size]
        for text, vector in zip(chunk, encoder.encode(chunk, args.batch_size).tolist(), strict=True):
            print(json.dumps({"text": text, "embedding": [round(x, 7) for x in vector]}), flush=True)
    return 0


def _add_embed(tasks) -> None:
    e = tasks.add_parser("embed", help="sentence embeddings (MiniLM)", formatter_class=_Formatter,
                         description="Print one JSON line per text: {\"text\", \"embedding\"}, a unit-length vector.")
    e.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (default: one per line on stdin)")
    e.add_argument("--model", default="minilm", help="minilm (packaged) or a BERT sentence-encoder directory")
    e.add_argument("--batch-size", type=positive_int, default=32)
    e.set_defaults(func=_embed)


# ---- folio serve -------------------------------------------------------------------------------
def _serve(args) -> int:
    try:
        from folio.serve.app import serve
    except ModuleNotFoundError as err:
        raise ConfigError(f"folio serve needs FastAPI and uvicorn ({err}): pip install 'folio[serve]'") from err
    serve(args.model, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes)
    return 0


def _add_serve(tasks) -> None:
    s = tasks.add_parser("serve", help="HTTP API and web page for trained models", formatter_class=_Formatter,
                         description="Serve models over HTTP: /v1/generate (SSE), /v1/classify, /v1/translate, "
                                     "/v1/models, /healthz, /docs, and a web page at /.")
    s.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                   help="a model directory to serve (repeatable); the name defaults to the directory's")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=positive_int, default=8000)
    s.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="larger request bodies get 413")
    s.set_defaults(func=_serve)


# ---- folio export ------------------------------------------------------------------------------
def _export(args) -> int:
    from folio.export import export

    print(json.dumps(export(args.model, args.format, args.out, args.quantize)))
    return 0


def _add_export(tasks) -> None:
    e = tasks.add_parser("export", help="a trained model as ONNX or TorchScript", formatter_class=_Formatter,
                         description="Export a language model, classifier or translation model (as an encoder and a "
                                     "decoder-step graph); every export is checked against PyTorch.")
    e.add_argument("--model", required=True, help="model directory")
    e.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    e.add_argument("--out", default=None, help="default: model.onnx / model.torchscript.pt in the model directory (a translation model: a folder "
                        "for encoder.* and decoder_step.*)")
    e.add_argument("--quantize", action="store_true", help="also write a dynamic int8 ONNX model, with its speed and drift")
    e.set_defaults(func=_export)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="folio", formatter_class=_Formatter,
                                     description="Folio: recurrent networks and attention for NLP.")
    from folio import __version__

    parser.add_argument("--version", action="version", version=f"folio {__version__}")
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    _add_lm(tasks)
    from folio.tasks.caption import add_cli as add_caption_cli
    from folio.tasks.classify import add_cli as add_classify_cli
    from folio.tasks.translate import add_cli as add_translate_cli

    add_classify_cli(tasks)
    add_translate_cli(tasks)
    add_caption_cli(tasks)
    _add_embed(tasks)
    _add_serve(tasks)
    _add_export(tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FolioError as err:
        print(f"folio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("folio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
