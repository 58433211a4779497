"""`folio embed`: one JSON line per text: its sentence vector (MiniLM or a BERT sentence encoder), or, from a
biLM (`folio lm train --arch bilm`), its tokens and one ELMo vector per token."""

from __future__ import annotations

import argparse
import json

from folio.errors import ConfigError
from folio.flags import positive_int, read_stdin_lines, utf8_text


def _layer(text: str) -> int | str:
    if text == "mix":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number or mix, got {text!r}") from None


def _embed(args) -> int:
    from folio.tasks.embed.contextual import ContextualEmbedder, is_bilm_directory

    texts = args.texts or [line for line in read_stdin_lines() if line.strip()]
    if not texts:
        raise ConfigError("no text to embed: pass TEXT arguments or lines on stdin")
    if is_bilm_directory(args.model):
        elmo = ContextualEmbedder.from_pretrained(args.model)
        elmo.check_layer(args.layer)  # a bad --layer fails before any work
        for start in range(0, len(texts), args.batch_size):  # print as we go: a long stdin streams out
            chunk = texts[start : start + args.batch_size]
            for text, (tokens, layers) in zip(chunk, elmo.embed_batch(chunk), strict=True):
                vectors = elmo.combine(layers, args.layer).tolist()  # (tokens, 2H)
                print(json.dumps({"text": text, "tokens": tokens, "layer": args.layer,
                                  "embeddings": [[round(x, 7) for x in v] for v in vectors]}), flush=True)
        return 0
    if args.layer != "mix":
        raise ConfigError("--layer picks a biLM layer; --model here is a sentence encoder (one vector per text)")
    from folio.models.sentence_encoder import load_sentence_encoder

    encoder = load_sentence_encoder(args.model)
    for start in range(0, len(texts), args.batch_size):
        chunk = texts[start : start + args.batch_size]
        for text, vector in zip(chunk, encoder.encode(chunk, args.batch_size).tolist(), strict=True):
            print(json.dumps({"text": text, "embedding": [round(x, 7) for x in vector]}), flush=True)
    return 0


def add_cli(e: argparse.ArgumentParser) -> None:
    """`folio embed TEXT...`."""
    e.add_argument("texts", nargs="*", type=utf8_text, metavar="TEXT", help="texts to embed (default: one per line on stdin)")
    e.add_argument("--model", default="minilm",
                   help="minilm (packaged) or a BERT sentence-encoder directory: one vector per text; or a biLM "
                        "directory (folio lm train --arch bilm): one ELMo vector per token")
    e.add_argument("--layer", type=_layer, default="mix",
                   help="biLM: which layer (0: the token layer, 1..L: the LSTM layers), or mix: ELMo's softmax-"
                        "weighted sum of all of them times a scale (untrained weights: the plain average)")
    e.add_argument("--batch-size", type=positive_int, default=32)
    e.set_defaults(func=_embed)
