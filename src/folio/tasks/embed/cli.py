"""`folio embed`: one JSON line per text with its sentence vector."""

from __future__ import annotations

import argparse
import json

from folio.errors import ConfigError
from folio.flags import positive_int, read_stdin_lines
from folio.models.sentence_encoder import load_sentence_encoder


def _embed(args) -> int:
    texts = args.texts or [line for line in read_stdin_lines() if line.strip()]
    if not texts:
        raise ConfigError("no text to embed: pass TEXT arguments or lines on stdin")
    encoder = load_sentence_encoder(args.model)
    for start in range(0, len(texts), args.batch_size):  # print as we go: a long stdin streams out
        chunk = texts[start : start + args.batch_size]
        for text, vector in zip(chunk, encoder.encode(chunk, args.batch_size).tolist(), strict=True):
            print(json.dumps({"text": text, "embedding": [round(x, 7) for x in vector]}), flush=True)
    return 0


def add_cli(e: argparse.ArgumentParser) -> None:
    """`folio embed TEXT...`."""
    e.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (default: one per line on stdin)")
    e.add_argument("--model", default="minilm", help="minilm (packaged) or a BERT sentence-encoder directory")
    e.add_argument("--batch-size", type=positive_int, default=32)
    e.set_defaults(func=_embed)
