"""`folio serve`: parses its flags and runs the server (FastAPI and uvicorn are imported only then)."""

from __future__ import annotations

import argparse

from folio.errors import ConfigError
from folio.flags import positive_int
from folio.models.llama_weights import DTYPES


def _serve(args) -> int:
    try:
        from folio.serve.app import serve
    except ModuleNotFoundError as err:
        raise ConfigError(f"folio serve needs FastAPI and uvicorn ({err}): pip install 'folio[serve]'") from err
    serve(args.model, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes, dtype=args.dtype)
    return 0


def add_cli(s: argparse.ArgumentParser) -> None:
    """`folio serve --model DIR ...`."""
    s.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                   help="a model directory to serve (repeatable); a pretrained language model (smollm2, a .gguf file, "
                        "a Hugging Face Llama directory); or a sentence encoder for /v1/embeddings (minilm, a BERT "
                        "sentence-encoder directory); the name defaults to the directory's (or file's)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=positive_int, default=8000)
    s.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="language models: the weights' format (see folio lm sample --help); others: fp32")
    s.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="larger request bodies get 413")
    s.set_defaults(func=_serve)
