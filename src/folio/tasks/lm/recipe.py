"""`folio lm`: language modelling end to end: Char-RNN, GPT, and masked-LM pretraining.

The vocabulary is characters (the default), words (`--tokenizer word`: the classifier's cleaning, top-V
words and hashed buckets) or byte-level BPE (`--tokenizer bpe`). `--arch gru|lstm|gpt` are causal
models that generate; `--arch bert` pretrains an encoder with BERT's masked-LM objective. A word- or
subword-level checkpoint of any of them starts a classifier: `folio classify train --init-from DIR`.

    >>> from folio.tasks.lm import LanguageModel
    >>> lm = LanguageModel.from_pretrained("runs/shakespeare")        # doctest: +SKIP
    >>> lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8)    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from folio.data.corpora import load_corpus, split_text
from folio.data.text import BPETokenizer, TextCleaner, WordVocab, load_tokenizer
from folio.data.vocab import CharVocab
from folio.data.windows import make_batches
from folio.decoding.sampling import StopStrings, check_sampling_options, generate_tokens
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.rnn_lm import RNNLanguageModel, RNNLMConfig
from folio.models.transformer import GPT, GPTConfig, MaskedLanguageModel, MaskedLMConfig
from folio.runtime import init_distributed, seed_everything, select_device, shutdown_distributed, threads
from folio.training.checkpoint import load_weights, read_config, resume_directory
from folio.training.trainer import TrainConfig, Trainer

TASK = "lm"
VOCAB_FILE = "vocab.json"
TOKENIZERS = ("char", "word", "bpe")
Vocabulary = CharVocab | WordVocab | BPETokenizer


@dataclass
class LMTrainOptions:
    """Everything `folio lm train` accepts, with the defaults of the CLI."""

    corpus: str = "shakespeare"
    out: str = "runs/lm"
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    lower: bool = False
    tokenizer: str = "char"  # char | word | bpe
    vocab_size: int = 8000  # words (plus oov_buckets) or BPE tokens; characters are all kept
    oov_buckets: int = 1000
    model: dict = field(default_factory=dict)  # RNNLMConfig, GPTConfig or MaskedLMConfig fields (by "arch"), except vocab_size
    seq_len: int = 100
    batch_size: int = 32
    stateful: bool = False
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=180))
    device: str = "auto"
    resume: str | None = None
    eval_streams: int = 16
    progress: bool = True


def build_model(model: dict) -> RNNLanguageModel | GPT | MaskedLanguageModel:
    """The model a `config.json` "model" section describes: arch gru/lstm → RNN, gpt → GPT, bert → masked LM."""
    if model.get("arch") == "gpt":
        return GPT(GPTConfig(**model))
    if model.get("arch") == "bert":
        return MaskedLanguageModel(MaskedLMConfig(**model))
    return RNNLanguageModel(RNNLMConfig(**model))


def fit_vocab(kind: str, text: str, vocab_size: int = 8000, oov_buckets: int = 1000, lower: bool = False) -> Vocabulary:
    """A vocabulary of characters, words or byte-level BPE tokens fitted on `text`."""
    if kind == "char":
        return CharVocab.fit(text, lower=lower)
    if kind == "word":
        cleaner = TextCleaner(lower=lower)
        return WordVocab.fit([cleaner.tokens(text)], vocab_size, oov_buckets, cleaner=cleaner)
    if kind == "bpe":
        if lower:
            raise ConfigError("--lower does not apply to --tokenizer bpe: byte-level BPE keeps the text as it is")
        return BPETokenizer.fit(text.splitlines(keepends=True), vocab_size)
    raise ConfigError(f"--tokenizer {kind!r}: choose one of {', '.join(TOKENIZERS)}")


def encode(vocab: Vocabulary, text: str) -> torch.Tensor:
    """Text → a LongTensor of token ids (T,)."""
    if isinstance(vocab, CharVocab):
        return vocab.encode(text)
    return torch.tensor(vocab.encode_text(text), dtype=torch.long)


def save_vocab(vocab: Vocabulary, directory: Path) -> None:
    """`vocab.json` (and a tokenizer's `tokenizer.json`) in a checkpoint directory; `load_tokenizer` reads any of them."""
    vocab.save(directory / VOCAB_FILE) if isinstance(vocab, CharVocab) else vocab.save(directory)


class Detokenizer:
    """Generated ids → the new text each adds, for any vocabulary. Byte-level BPE can end a step inside
    a multi-byte character: such a step adds nothing until the character is complete."""

    def __init__(self, vocab: Vocabulary, context: list[int]):
        self.vocab = vocab
        self.chars = vocab.chars if isinstance(vocab, CharVocab) else None
        self.ids = list(context[-8:])  # a few ids of context, so word spacing and merges come out right
        self.text = "" if self.chars else vocab.decode(self.ids)

    def feed(self, token: int) -> str:
        if self.chars is not None:
            return self.chars[token]
        self.ids.append(token)
        text = self.vocab.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.text = text[len(self.text) :], text
        if len(self.ids) > 64:  # keep decoding cheap: restart from the last few ids
            self.ids = self.ids[-8:]
            self.text = self.vocab.decode(self.ids)
        return new


@torch.no_grad()
def masked_lm_loss(model: MaskedLanguageModel, ids: torch.Tensor, batch_size: int = 32, seed: int = 0) -> tuple[float, int]:
    """Mean masked-token loss over `ids` read as windows of the model's context, masked with a fixed seed
    (the same positions at every evaluation). Returns (loss, positions scored)."""
    device = next(model.parameters()).device
    context = model.config.context
    windows = ids[: len(ids) // context * context].view(-1, context) if len(ids) >= context else ids.view(1, -1)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, windows.size(0), batch_size):
        batch = windows[start : start + batch_size].to(device)
        loss, picked = model.masked_loss(batch, torch.ones_like(batch, dtype=torch.bool), generator, reduction="sum")
        total, count = total + loss.item(), count + picked
    model.train(was_training)
    return total / max(count, 1), count


@torch.no_grad()
def stream_loss(model: RNNLanguageModel | GPT, ids: torch.Tensor, seq_len: int = 256, streams: int = 16) -> tuple[float, int]:
    """Mean next-token loss (nats) over `ids`, read as `streams` contiguous streams with the state carried.

    Every token after a stream's first is predicted once, with all earlier tokens of its stream as
    context, as a recurrent model is used in practice. Fewer streams mean fewer cold starts (slightly
    lower loss) but a longer sequential loop. Returns (loss, tokens predicted).
    """
    device = next(model.parameters()).device
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    stream_len = (len(ids) - 1) // streams
    inputs = ids[: stream_len * streams].view(streams, stream_len).to(device)  # (S, L)
    targets = ids[1 : stream_len * streams + 1].view(streams, stream_len).to(device)
    total, state = 0.0, None
    was_training = model.training
    model.eval()
    for start in range(0, stream_len, seq_len):  # the last window may be shorter: no token is dropped
        logits, state = model(inputs[:, start : start + seq_len], state)
        total += torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), targets[:, start : start + seq_len].reshape(-1), reduction="sum"
        ).item()
    model.train(was_training)
    return total / targets.numel(), targets.numel()


def loss_report(loss: float, tokens: int, level: str = "char") -> dict:
    """`loss` in nats per token; `bits_per_char` is bits per token at word or BPE level (see `level`)."""
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss), "tokens": tokens, "level": level}


def evaluate_ids(model, ids: torch.Tensor, seq_len: int = 256, streams: int = 16) -> tuple[float, int]:
    """Next-token loss for causal models, masked-token loss for a masked LM."""
    if isinstance(model, MaskedLanguageModel):
        return masked_lm_loss(model, ids)
    return stream_loss(model, ids, seq_len, streams)


def train(options: LMTrainOptions) -> dict:
    """Train a character language model; returns the trainer's summary."""
    device = select_device(options.device)
    dist_info = init_distributed(device)
    try:
        seed_everything(options.train.seed + dist_info.rank)
        out = Path(options.out)
        resume_dir, saved = resume_directory(options.resume, out, TASK)
        if resume_dir is not None:
            vocab = load_tokenizer(resume_dir)
            model_dict = saved["model"]
        text = load_corpus(options.corpus)
        splits = split_text(text, options.split)
        if resume_dir is None:
            # characters: every one in the corpus (the model must read any of them); words and BPE: the
            # training split alone
            vocab = fit_vocab(options.tokenizer, text if options.tokenizer == "char" else splits["train"],
                              options.vocab_size, options.oov_buckets, options.lower)
            model_dict = {"vocab_size": len(vocab), **options.model}
        model = build_model(model_dict)
        if not isinstance(model, RNNLanguageModel) and options.stateful:
            raise ConfigError("--stateful carries a recurrent state; a Transformer sees its context in every window")
        for name in ("train", "valid"):
            if len(splits[name]) < 2:
                raise DataError(f"corpus {options.corpus!r} is too short: its {name} split has {len(splits[name])} characters")
        train_ids = encode(vocab, splits["train"])
        valid_ids = encode(vocab, splits["valid"])
        batches = make_batches(
            train_ids, options.seq_len, options.batch_size, options.stateful,
            seed=options.train.seed, rank=dist_info.rank, world_size=dist_info.world_size,
        )
        model_config = model.config
        saved_config = {
            "task": TASK,
            "model": model_config.to_dict(),
            "data": {"corpus": options.corpus, "split": list(options.split), "seq_len": options.seq_len,
                     "batch_size": options.batch_size, "stateful": options.stateful, "tokenizer": vocab.kind},
            "train": options.train.to_dict(),
        }
        trainer = Trainer(
            model, batches, options.train, out,
            evaluate=lambda m: evaluate_ids(m, valid_ids, streams=options.eval_streams)[0],
            saved_config=saved_config,
            write_extras=lambda d: save_vocab(vocab, d),
            device=device, dist_info=dist_info, progress=options.progress,
        )
        if resume_dir is not None:
            trainer.resume(resume_dir)
        if dist_info.is_main:
            params = sum(p.numel() for p in model.parameters())
            trainer.progress.message(
                f"{model_config.arch.upper()} {model_config.layers}x{model_config.hidden}, {params:,} parameters, "
                f"{len(vocab):,} {vocab.kind} tokens in the vocabulary, {len(train_ids):,} training tokens, device {device}"
                + (f", {dist_info.world_size} processes" if dist_info.world_size > 1 else "")
                + (f", resuming at step {trainer.step}" if resume_dir is not None else "")
            )
        return trainer.train()
    finally:
        shutdown_distributed()


class LanguageModel:
    """A trained character language model with its vocabulary: generate, stream, score.

    >>> lm = LanguageModel.from_pretrained("runs/lm")           # doctest: +SKIP
    >>> lm.predict_next("How are yo")                            # doctest: +SKIP
    'u'
    """

    def __init__(self, model: RNNLanguageModel | GPT | MaskedLanguageModel, vocab: Vocabulary, config: dict | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.config = config or {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> LanguageModel:
        config = read_config(directory, TASK)
        try:
            model = build_model(config["model"])
        except (KeyError, TypeError, ConfigError) as err:
            raise CheckpointError(f"{directory}/config.json has no valid 'model' section: {err}") from err
        load_weights(model, directory)
        return cls(model.to(select_device(device)), load_tokenizer(directory), config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prompt_ids(self, prompt: str) -> torch.Tensor:
        if isinstance(self.model, MaskedLanguageModel):
            raise ConfigError("a masked LM (--arch bert) does not generate text; use it to start a classifier: "
                              "folio classify train --init-from MODEL_DIR")
        if not prompt:
            raise ConfigError("the prompt is empty: give at least one character to start from")
        ids = encode(self.vocab, prompt)
        if not len(ids):
            raise ConfigError(f"the prompt {prompt!r} has no tokens the model reads (after its {self.vocab.kind} cleaning)")
        return ids.to(self.device)

    @torch.inference_mode()
    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[list[str]]:
        """Yield, per step, the new text of each sample (a list of `num_samples` strings).

        The prompt is read once; each new character costs one recurrent step with the carried state.
        Text is cut at the first stop string (which is not included).
        """
        check_sampling_options(temperature, top_k, top_p)
        if num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
        ids = self._prompt_ids(prompt).unsqueeze(0).expand(num_samples, -1)  # (N, P)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        logits, state = self.model(ids)
        stoppers = [StopStrings(stop) for _ in range(num_samples)]

        def step(tokens, state):
            logits, state = self.model(tokens.unsqueeze(1), state)  # (N, 1, V)
            return logits[:, -1], state

        context = ids[0].tolist()
        detokenizers = [Detokenizer(self.vocab, context) for _ in range(num_samples)]
        with threads(1 if self.device.type == "cpu" else None):
            for tokens in generate_tokens(step, logits[:, -1], state, max_new_tokens, temperature, top_k, top_p, generator):
                yield [s.feed(d.feed(t)) for s, d, t in zip(stoppers, detokenizers, tokens.tolist(), strict=True)]
                if all(s.done for s in stoppers):
                    return
        tail = [s.flush() for s in stoppers]
        if any(tail):
            yield tail

    def generate(self, prompt: str, max_new_tokens: int = 500, num_samples: int = 1, **options) -> str | list[str]:
        """The prompt followed by generated text; a list when `num_samples` > 1."""
        pieces = [[] for _ in range(num_samples)]
        for step in self.stream(prompt, max_new_tokens, num_samples=num_samples, **options):
            for buffer, piece in zip(pieces, step, strict=True):
                buffer.append(piece)
        texts = [prompt + "".join(buffer) for buffer in pieces]
        return texts[0] if num_samples == 1 else texts

    @torch.inference_mode()
    def next_char_probabilities(self, prompt: str) -> dict[str, float]:
        logits, _ = self.model(self._prompt_ids(prompt).unsqueeze(0))
        probs = logits[0, -1].float().softmax(-1).tolist()
        if isinstance(self.vocab, CharVocab):
            return dict(zip(self.vocab.chars, probs, strict=True))
        out: dict[str, float] = {}
        for i, p in enumerate(probs):  # word buckets all read <unk>: their probabilities add up
            token = self.vocab.decode([i]) if i else "<pad>"
            out[token] = out.get(token, 0.0) + p
        return out

    def predict_next(self, prompt: str) -> str:
        """The most likely next character (or token)."""
        probs = self.next_char_probabilities(prompt)
        return max(probs, key=probs.get)

    @torch.inference_mode()
    def attention(self, text: str) -> list[torch.Tensor]:
        """A GPT's self-attention over `text`: per layer, weights (heads, T, T) (row: a character, column:
        the characters it attends to)."""
        if not isinstance(self.model, GPT):
            raise ConfigError("attention maps need a Transformer (--arch gpt); this model is recurrent")
        return [w[0].float().cpu() for w in self.model.attention_weights(self._prompt_ids(text).unsqueeze(0))]

    def plot_attention(self, text: str, path: str | Path, layer: int = -1, head: int | None = None) -> None:
        """PNG heatmaps of one layer's attention over `text`: one head, or every head side by side."""
        from folio.render import attention_heatmaps

        layers = self.attention(text)
        if not -len(layers) <= layer < len(layers):
            raise ConfigError(f"--layer {layer}: the model has layers 0..{len(layers) - 1}")
        weights = layers[layer]
        heads = range(weights.size(0)) if head is None else [head]
        if head is not None and not 0 <= head < weights.size(0):
            raise ConfigError(f"--head {head}: the model has heads 0..{weights.size(0) - 1}")
        tokens = list(text) if isinstance(self.vocab, CharVocab) else self.vocab.tokenize(text)[0]
        labels = [repr(c)[1:-1] for c in tokens]  # newlines and tabs stay visible
        attention_heatmaps([weights[h].numpy() for h in heads], labels, labels, path,
                           titles=[f"layer {layer % len(layers)}, head {h}" for h in heads], ylabel="character")

    def evaluate(self, text: str, seq_len: int = 256, streams: int = 16) -> dict:
        """Loss (nats per token: per character for a character model), bits, perplexity and token count on
        `text`; for a masked LM, the loss on masked tokens (fixed positions)."""
        ids = encode(self.vocab, text)
        if len(ids) < 2:
            raise DataError("the text to evaluate needs at least two tokens")
        return loss_report(*evaluate_ids(self.model, ids, seq_len, streams), self.vocab.kind)
