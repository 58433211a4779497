"""ELMo's contextual word vectors from a trained biLM (`folio pretrain train --arch bilm`): one vector per token,
different in every context.

    >>> elmo = ContextualEmbedder.from_pretrained("runs/bilm")              # doctest: +SKIP
    >>> tokens, layers = elmo.embed("the bank of the river")                # doctest: +SKIP
    >>> layers.shape                   # (tokens, layers + 1, 2 * hidden): the token layer, then each LSTM layer
    torch.Size([5, 3, 512])
    >>> elmo.combine(layers).shape     # ELMo's mix: softmax-normalised layer weights (here equal) times a scale
    torch.Size([5, 512])
"""

from __future__ import annotations

from pathlib import Path

import torch

from folio.data.text import pad_sequences
from folio.errors import CheckpointError, ConfigError
from folio.models.bilm import BiLM, ScalarMix, word_chars
from folio.models.registry import load_checkpoint, model_section, read_config
from folio.runtime import select_device
from folio.tasks.pretrain.inference import model_kind
from folio.tokenizers import Tokenizer


def is_bilm_directory(model: str | Path) -> bool:
    """Whether `model` is a directory whose config.json describes a biLM (`folio pretrain train --arch bilm`;
    no weights read)."""
    return model_kind(model) == "bidirectional"


class ContextualEmbedder:
    """A frozen biLM and its tokenizer: texts → tokens and their ELMo layers.

    With a character CNN, every token's vector comes from its own characters, so a word the biLM never saw
    still gets one of its own (an embedding table gives all unknown words of a hashed bucket the same start).
    """

    def __init__(self, model: BiLM, vocab: Tokenizer):
        self.model = model.eval()
        self.vocab = vocab

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> ContextualEmbedder:
        """A `folio pretrain train --arch bilm` directory (or `folio lm train --arch bilm`, its alias); any other model is refused by name."""
        if not is_bilm_directory(directory):
            need = "a biLM directory is needed (folio lm train --arch bilm)"
            try:
                arch = model_section(read_config(directory, "lm"))["arch"]
            except CheckpointError as err:  # missing, broken, or another task's: said, with what was wanted
                raise CheckpointError(f"{err}; {need}") from err
            raise CheckpointError(f"{directory} holds a {arch} language model, not a biLM; {need}")
        model, vocab, _ = load_checkpoint(directory, "lm", select_device(device))
        return cls(model, vocab)

    @property
    def layers(self) -> int:
        """Representations per token: the token layer and one per LSTM layer."""
        return self.model.config.layers + 1

    @property
    def dim(self) -> int:
        return self.model.config.dim

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        """The text's tokens as the biLM reads them (a word tokenizer's cleaned words, or each BPE token's text)."""
        tokens, ids = self.vocab.tokenize(text)
        if self.vocab.kind not in ("char", "word"):
            tokens = [self.vocab.decode([i]) for i in ids]
        return tokens, ids

    @torch.no_grad()
    def embed_batch(self, texts: list[str]) -> list[tuple[list[str], torch.Tensor]]:
        """Each text's tokens and layers (tokens, layers + 1, 2H), computed as one right-padded batch."""
        tokenized = [self.tokenize(text) for text in texts]
        for text, (tokens, _) in zip(texts, tokenized, strict=True):
            if not tokens:
                raise ConfigError(f"the text {text[:40]!r} has no tokens the biLM reads (after its {self.vocab.kind} cleaning)")
        device = next(self.model.parameters()).device
        ids, mask = pad_sequences([ids for _, ids in tokenized])  # (B, T)
        chars = None
        if self.model.config.char_cnn:  # the words' own characters, not their vocabulary entries
            width = self.model.config.max_chars
            chars = torch.zeros(*ids.shape, width, dtype=torch.long)  # (B, T, W)
            for row, (tokens, _) in enumerate(tokenized):
                chars[row, : len(tokens)] = torch.tensor([word_chars(t, width) for t in tokens])
            chars = chars.to(device)
        layers = self.model.layer_outputs(ids.to(device), mask.to(device), chars)  # (B, T, L + 1, 2H)
        return [(tokens, layers[row, : len(tokens)].cpu()) for row, (tokens, _) in enumerate(tokenized)]

    def embed(self, text: str) -> tuple[list[str], torch.Tensor]:
        """One text's tokens and their layers (tokens, layers + 1, 2H)."""
        return self.embed_batch([text])[0]

    def combine(self, layers: torch.Tensor, layer: int | str = "mix", mix: ScalarMix | None = None) -> torch.Tensor:
        """(…, layers + 1, 2H) → (…, 2H): one layer (0 is the token layer), or ELMo's mix (`mix`'s learned
        weights and scale; by default equal weights and scale 1, the plain average of the layers)."""
        self.check_layer(layer)
        if layer == "mix":
            return (mix or ScalarMix(self.layers))(layers).detach()
        return layers[..., layer, :]

    def check_layer(self, layer: int | str) -> None:
        """Refuse a layer this biLM does not have (before any text is read)."""
        if layer != "mix" and (not isinstance(layer, int) or not 0 <= layer < self.layers):
            raise ConfigError(f"--layer {layer}: this biLM has layers 0 (tokens) to {self.layers - 1}, or mix")


__all__ = ["ContextualEmbedder", "is_bilm_directory"]
