"""`Translator`: a trained translation model with its tokenizers, from Python.

    >>> from folio.tasks.translate import Translator
    >>> tr = Translator.from_pretrained("runs/dates")                          # doctest: +SKIP
    >>> tr.translate(["Monday, April 22nd 2019"])[0].text                      # doctest: +SKIP
    '2019-04-22'
    >>> out = tr.translate(["the 3rd of May 1901"], beam_size=5, num_return=3)   # doctest: +SKIP
    >>> [(h.text, h.score) for h in out[0].n_best], out[0].attention.shape      # doctest: +SKIP

Sources longer than the model's limit (its longest training source, or --max-src-len) are refused with
an error, or truncated with a warning when `truncate=True` (`--truncate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from folio.data.pairs import EOS, SOS, Pair, pad_batch
from folio.decoding.beam import Hypothesis, beam_search, check_decoding_options, greedy_decode
from folio.errors import DataError
from folio.models.registry import load_checkpoint
from folio.runtime import select_device
from folio.tasks.translate.data import SourceEncoder
from folio.tasks.translate.metrics import score_translations
from folio.tasks.translate.recipe import TASK
from folio.tokenizers import Tokenizer


@dataclass
class Translation:
    """One source's translation; `n_best` and `attention` as `Translator.translate` was asked for them."""

    source: str
    text: str  # the best translation
    score: float  # its length-penalised log-probability
    n_best: list[Translation] = field(default_factory=list)  # best first (includes this one) when num_return > 1
    attention: torch.Tensor | None = None  # (target tokens + EOS, source tokens + EOS), source in reading order
    source_pieces: list[str] = field(default_factory=list)
    target_pieces: list[str] = field(default_factory=list)


class Translator:
    """A trained translation model with its tokenizers: translate, evaluate, show attention."""

    def __init__(self, model: torch.nn.Module, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, config: dict):
        self.model = model.eval()
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.config = config
        self.reverse_source = bool(config.get("data", {}).get("reverse_source", False))
        self.encode_source = SourceEncoder(src_tokenizer, self.reverse_source, model.config.max_src_len)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> Translator:
        """The model, weights and tokenizers a `folio translate train` directory holds."""
        model, (src_tok, tgt_tok), config = load_checkpoint(directory, TASK, select_device(device))
        return cls(model, src_tok, tgt_tok, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def translate(
        self,
        texts: list[str],
        beam_size: int = 1,
        length_penalty: float = 0.6,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        no_repeat_ngram_size: int = 0,
        num_return: int = 1,
        batch_size: int = 64,
        return_attention: bool = False,
        truncate: bool = False,
        names: list[str] | None = None,
    ) -> list[Translation]:
        """Translate `texts` in batches of similar length; beam_size 1 is greedy decoding.

        Each output is at most max_len_a * source tokens + max_len_b tokens long.
        `names` label the inputs in error messages (e.g. "line 3 of in.txt").
        """
        check_decoding_options(beam_size, num_return, length_penalty, no_repeat_ngram_size)
        if isinstance(texts, str):
            texts = [texts]
        names = names or [f"source {i + 1}" for i in range(len(texts))]
        encoded = [self.encode_source(t, n, truncate) for t, n in zip(texts, names, strict=False)]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        results: list[Translation | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            decoded = self._decode([encoded[i] for i in rows], beam_size, length_penalty, max_len_a, max_len_b,
                                   no_repeat_ngram_size, num_return, return_attention)
            for row, hyps in zip(rows, decoded, strict=True):
                results[row] = self._to_translation(texts[row], encoded[row], hyps, return_attention)
        return results

    def _decode(self, sources, beam_size, length_penalty, max_len_a, max_len_b, no_repeat_ngram_size, num_return,
                keep_attention):
        batch = pad_batch(sources).to(self.device)
        model = self.model
        state = model.encode(batch.src, batch.src_lengths)
        max_lengths = (batch.src_lengths.float() * max_len_a + max_len_b).long().clamp(min=1)
        if beam_size == 1:
            return [[h] for h in greedy_decode(model.decode_step, state, len(sources), SOS, EOS, max_lengths, self.device)]
        state = model.expand_state(state, beam_size)
        return beam_search(model.decode_step, model.reorder_state, state, len(sources), SOS, EOS, beam_size, max_lengths,
                           length_penalty, no_repeat_ngram_size, num_return, device=self.device,
                           keep_attention=keep_attention)

    def _to_translation(self, text: str, src_ids: list[int], hyps: list[Hypothesis], with_attention: bool) -> Translation:
        n_best = [Translation(text, self.tgt_tokenizer.decode(h.tokens), h.score) for h in hyps]
        best = n_best[0]
        best.n_best = n_best if len(n_best) > 1 else []
        if with_attention and hyps[0].attention is not None:
            attention = hyps[0].attention[:, : len(src_ids)].float().cpu()  # (T+1, S+1)
            if self.reverse_source:  # show the source in reading order: the tokens were fed reversed
                attention = torch.cat([attention[:, :-1].flip(1), attention[:, -1:]], 1)
            best.attention = attention
            best.source_pieces = self.src_tokenizer.tokenize(text)[0][: len(src_ids) - 1] + ["</s>"]
            best.target_pieces = [self.tgt_tokenizer.id_to_token(i) for i in hyps[0].tokens] + ["</s>"]
        return best

    def evaluate(self, pairs: list[Pair], beam_size: int = 1, batch_size: int = 64, **options) -> dict:
        """Corpus BLEU and chrF (sacrebleu), exact match, n, and BLEU by source length."""
        if not pairs:
            raise DataError("no pairs to evaluate")
        translations = self.translate([s for s, _ in pairs], beam_size=beam_size, batch_size=batch_size, truncate=True, **options)
        hypotheses = [t.text for t in translations]
        return score_translations([s for s, _ in pairs], hypotheses, [t for _, t in pairs]) | {"hypotheses": hypotheses}
