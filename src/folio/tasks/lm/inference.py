"""`folio lm`'s Python API: a trained language model with its vocabulary (generate, stream, score, attention).

    >>> from folio.tasks.lm import LanguageModel
    >>> lm = LanguageModel.from_pretrained("runs/shakespeare")        # doctest: +SKIP
    >>> lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8)    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from folio.decoding.sampling import StopStrings, check_sampling_options, generate_tokens
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.bert import MaskedLanguageModel
from folio.models.gpt import GPT
from folio.models.rnn_lm import RNNLanguageModel
from folio.runtime import select_device, threads
from folio.tasks.lm.data import Vocabulary, encode
from folio.tasks.lm.metrics import evaluate_ids, loss_report
from folio.tasks.lm.recipe import TASK, build_model
from folio.tokenizers import CharTokenizer, load_tokenizer
from folio.training.checkpoint import load_weights, read_config


class Detokenizer:
    """Generated ids → the new text each adds, for any vocabulary. Byte-level BPE can end a step inside
    a multi-byte character: such a step adds nothing until the character is complete."""

    def __init__(self, vocab: Vocabulary, context: list[int]):
        self.vocab = vocab
        self.per_id = isinstance(vocab, CharTokenizer)  # a character's text needs no context
        self.ids = list(context[-8:])  # a few ids of context, so word spacing and merges come out right
        self.text = "" if self.per_id else vocab.decode(self.ids)

    def feed(self, token: int) -> str:
        """The text `token` adds ("" while a character is incomplete)."""
        if self.per_id:
            return self.vocab.id_to_token(token)
        self.ids.append(token)
        text = self.vocab.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.text = text[len(self.text) :], text
        if len(self.ids) > 64:  # keep decoding cheap: restart from the last few ids
            self.ids = self.ids[-8:]
            self.text = self.vocab.decode(self.ids)
        return new


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
        """A `folio lm train` directory (config.json, model.safetensors, vocabulary) loaded onto `device`."""
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
        """The probability of each next character (or token, by its text) after `prompt`."""
        logits, _ = self.model(self._prompt_ids(prompt).unsqueeze(0))
        probs = logits[0, -1].float().softmax(-1).tolist()
        out: dict[str, float] = {}
        for i, p in enumerate(probs):  # word buckets all read <unk>: their probabilities add up
            token = self.vocab.decode([i]) if i != self.vocab.pad_id else "<pad>"
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
        tokens = self.vocab.tokenize(text)[0]
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
