"""ELMo's bidirectional language model (Peters et al. 2018), and the contextual word vectors taken from it.

A forward and a backward LSTM stack share one token encoder (an embedding table, or ELMo's character
convolutions with highway layers, `char_cnn`) and one softmax. The forward stack reads a window left to
right and predicts each next token; the backward stack reads it right to left and predicts each previous
token; the loss is the mean of the two (`folio lm train --arch bilm`).

The representations of a token are the layers ELMo mixes: layer 0 is the token vector, duplicated to
match the width of the others ([x; x]), and layer k is [forward_k; backward_k], both stacks' states at
that token. `ScalarMix` combines them as ELMo does: softmax-normalised layer weights times a scale.

    >>> bilm = BiLM(BiLMConfig(vocab_size=50, layers=2, hidden=16))
    >>> ids = torch.randint(1, 50, (3, 7)); mask = torch.ones(3, 7, dtype=torch.bool)
    >>> bilm.layer_outputs(ids, mask).shape     # (B, T, layers + 1, 2 * hidden)
    torch.Size([3, 7, 3, 32])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.flags import finite_float, non_negative_int, positive_int
from folio.models import check_fractions, check_sizes
from folio.models.options import option
from folio.nn.masks import reverse_within_length

# Characters are UTF-8 bytes, as ELMo's: 0 pads, byte b is b + 1, then begin- and end-of-word marks.
CHAR_PAD, BEGIN_WORD, END_WORD, CHAR_VOCAB = 0, 257, 258, 259


def word_chars(word: str, max_chars: int) -> list[int]:
    """A token's character ids: begin-of-word, its UTF-8 bytes (cut to fit), end-of-word, padding.

    >>> word_chars("ok", 6)
    [257, 112, 108, 258, 0, 0]
    """
    body = [b + 1 for b in word.encode("utf-8")[: max_chars - 2]]
    return ([BEGIN_WORD, *body, END_WORD] + [CHAR_PAD] * max_chars)[:max_chars]


@dataclass
class BiLMConfig:
    vocab_size: int
    arch: str = "bilm"
    layers: int = option(2, type=positive_int, help="layers")
    hidden: int = option(256, type=positive_int, help="LSTM units per direction, and the token vector's width",
                         cli_default=128)
    dropout: float = option(0.1, type=finite_float, help="on token vectors, between layers and before the softmax",
                            cli_default=0.2)
    char_cnn: bool = option(False, action="store_true",
                            help="build each token's vector from its characters (ELMo's convolutions and highway "
                                 "layers), so unseen words get vectors too; default: an embedding table")
    char_dim: int = 16
    filters: list[list[int]] = field(default_factory=lambda: [[1, 32], [2, 32], [3, 64], [4, 128], [5, 128]])  # [width, count]
    highway: int = 2
    max_chars: int = 20  # bytes of a token the CNN reads (with its two marks); longer tokens are cut
    softmax_samples: int = option(0, type=non_negative_int, metavar="N",
                                  help="train with a sampled softmax over N log-uniform token ids, as ELMo (several "
                                       "times faster on a large vocabulary; evaluation uses the full softmax); 0: the "
                                       "full softmax")

    def __post_init__(self):
        if self.arch != "bilm":
            raise ConfigError(f"BiLMConfig arch must be 'bilm', got {self.arch!r}")
        check_sizes(self, "vocab_size", "layers", "hidden", "char_dim", "max_chars")
        check_fractions(self, "dropout")
        if self.softmax_samples < 0:
            raise ConfigError(f"--softmax-samples must be 0 (the full softmax) or more, got {self.softmax_samples}")
        if self.highway < 0:
            raise ConfigError(f"--highway must be 0 or more, got {self.highway}")
        widths = [w for w, _ in self.filters]
        if not self.filters or min(widths) < 1 or max(widths) > self.max_chars or min(n for _, n in self.filters) < 1:
            raise ConfigError(f"char CNN filters {self.filters}: each [width, count] needs 1 <= width <= "
                              f"--max-chars ({self.max_chars}) and count >= 1")

    @property
    def dim(self) -> int:
        """The width of every layer's representation: both directions side by side."""
        return 2 * self.hidden

    def to_dict(self) -> dict:
        return asdict(self)


class CharCNN(nn.Module):
    """Character ids (N, W) → token vectors (N, out_dim): byte embeddings, convolutions of several widths
    max-pooled over the word, highway layers, a projection (ELMo's token encoder), and a LayerNorm, which
    ELMo has not: without it the vectors grew to hundreds under AdamW at lr 1e-2 and the biLM stalled."""

    def __init__(self, out_dim: int, char_dim: int, filters: list[list[int]], highway: int):
        super().__init__()
        self.embedding = nn.Embedding(CHAR_VOCAB, char_dim, padding_idx=CHAR_PAD)
        self.convs = nn.ModuleList(nn.Conv1d(char_dim, count, width) for width, count in filters)
        width = sum(count for _, count in filters)
        self.highways = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(highway))
        for layer in self.highways:  # carry the input at first (gate bias 1 → the gate favours the input), as ELMo
            nn.init.constant_(layer.bias[width:], 1.0)
        self.project = nn.Linear(width, out_dim)
        self.norm = nn.LayerNorm(out_dim)  # keeps token vectors on the LSTM states' scale (unbounded ReLUs drift)

    def forward(self, chars: Tensor) -> Tensor:
        x = self.embedding(chars).transpose(1, 2)  # (N, char_dim, W)
        h = torch.cat([F.relu(conv(x).amax(-1)) for conv in self.convs], dim=-1)  # (N, F)
        for layer in self.highways:
            transform, gate = layer(h).chunk(2, dim=-1)
            carry = torch.sigmoid(gate)
            h = carry * h + (1 - carry) * F.relu(transform)
        return self.norm(self.project(h))  # (N, out_dim)


class BiLM(nn.Module):
    """Token ids (B, T) → ELMo layers (B, T, layers + 1, 2H); `loss(batch)` trains both directions.

    With `char_cnn`, a token's vector comes from its characters: in training the ids' characters are read
    from `token_chars` (the vocabulary's spelling, set by `set_vocabulary`); `layer_outputs(..., chars=)`
    takes the characters of any words, seen in training or not.
    """

    kind = "bidirectional"  # the language models' contract: see folio.models

    def __init__(self, config: BiLMConfig):
        super().__init__()
        self.config = config
        c = config
        if c.char_cnn:
            self.char_cnn = CharCNN(c.hidden, c.char_dim, c.filters, c.highway)
            self.register_buffer("token_chars", torch.zeros(c.vocab_size, c.max_chars, dtype=torch.long))
        else:
            self.embedding = nn.Embedding(c.vocab_size, c.hidden, padding_idx=0)
        self.forward_layers = nn.ModuleList(nn.LSTM(c.hidden, c.hidden, batch_first=True) for _ in range(c.layers))
        self.backward_layers = nn.ModuleList(nn.LSTM(c.hidden, c.hidden, batch_first=True) for _ in range(c.layers))
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden, c.vocab_size)  # the softmax both directions share

    def set_vocabulary(self, spellings: list[str]) -> None:
        """The text of every id (a char CNN reads its characters; "" for ids with no spelling: padding, buckets)."""
        if not self.config.char_cnn:
            return
        if len(spellings) != self.config.vocab_size:
            raise ConfigError(f"{len(spellings)} spellings for a vocabulary of {self.config.vocab_size}")
        table = torch.tensor([word_chars(s, self.config.max_chars) for s in spellings], dtype=torch.long)
        self.token_chars.copy_(table)

    def token_vectors(self, ids: Tensor, chars: Tensor | None = None) -> Tensor:
        """ids (B, T) (and, for a char CNN, optionally their characters (B, T, W)) → vectors (B, T, H)."""
        if not self.config.char_cnn:
            return self.embedding(ids)
        if chars is None and (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            chars = self.token_chars[ids]  # an exported graph convolves every position (ONNX has no unique-inverse here)
        if chars is not None:
            return self.char_cnn(chars.flatten(0, 1)).view(*chars.shape[:2], -1)
        unique, inverse = ids.unique(return_inverse=True)  # each distinct token's characters convolved once
        return self.char_cnn(self.token_chars[unique])[inverse]  # (B, T, H)

    def _stack(self, layers: nn.ModuleList, x: Tensor) -> list[Tensor]:
        """Each layer's outputs (B, T, H) for input x; layers above the first add their input (residual, as ELMo)."""
        outputs = []
        for i, lstm in enumerate(layers):
            h = lstm(x)[0]
            h = h + x if i > 0 else h
            outputs.append(h)
            x = self.dropout(h)
        return outputs

    def layer_outputs(self, ids: Tensor, mask: Tensor | None = None, chars: Tensor | None = None) -> Tensor:
        """ELMo's representations (B, T, layers + 1, 2H) of right-padded ids (B, T) (mask: True = real token).

        The backward stack reads each row reversed within its own length, so padding never reaches a real
        token's vector.
        """
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        lengths = mask.sum(1).clamp(min=1)  # (B,)
        x = self.dropout(self.token_vectors(ids, chars))  # (B, T, H)
        forward = self._stack(self.forward_layers, x)
        backward = [reverse_within_length(h, lengths)
                    for h in self._stack(self.backward_layers, reverse_within_length(x, lengths))]
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat(pair, dim=-1) for pair in zip(forward, backward, strict=True)]
        return torch.stack(layers, dim=2)  # (B, T, L + 1, 2H)

    def direction_losses(self, window: Tensor, reduction: str = "mean") -> tuple[Tensor, Tensor]:
        """Next-token loss of the forward stack and previous-token loss of the backward stack over windows
        (B, T + 1): each predicts T tokens of every row."""
        x = self.dropout(self.token_vectors(window))  # (B, T + 1, H)
        losses = []
        for layers, tokens, vectors in ((self.forward_layers, window, x), (self.backward_layers, window.flip(1), x.flip(1))):
            top = self.dropout(self._stack(layers, vectors[:, :-1])[-1]).flatten(0, 1)  # (B * T, H)
            targets = tokens[:, 1:].flatten()
            if self.training and self.config.softmax_samples and reduction == "mean":
                losses.append(self._sampled_loss(top, targets))
            else:
                losses.append(F.cross_entropy(self.head(top).float(), targets, reduction=reduction))
        return losses[0], losses[1]

    def _sampled_loss(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Sampled softmax (Jean et al. 2015, as ELMo trained): each position's true token against one shared
        draw of `softmax_samples` ids from the log-uniform (Zipf) distribution over ids 1..V-1 (the vocabulary
        is sorted by frequency; 0 is padding), every logit less the log of its expected count in the draw, and a
        drawn id equal to a position's target left out of that position's softmax. Its gradient estimates the
        full softmax's at a fraction of the cost; evaluation always uses the full softmax."""
        vocab, samples = self.config.vocab_size, self.config.softmax_samples
        log_vocab = math.log(vocab)
        drawn = torch.exp(torch.rand(samples, device=hidden.device) * log_vocab).long().clamp_(1, vocab - 1)

        def log_expected(ids: Tensor) -> Tensor:  # log(samples * P(id)), P(k) = log((k + 1) / k) / log V
            k = ids.float().clamp(min=1)
            return math.log(samples) + torch.log(torch.log1p(1 / k) / log_vocab)

        weight, bias = self.head.weight, self.head.bias
        true = (hidden * weight[targets]).sum(-1) + bias[targets] - log_expected(targets)  # (N,)
        sampled = hidden @ weight[drawn].T + bias[drawn] - log_expected(drawn)  # (N, S)
        sampled = sampled.masked_fill(drawn[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([true[:, None], sampled], dim=1).float()
        return F.cross_entropy(logits, torch.zeros_like(targets))

    def loss(self, batch) -> Tensor:
        """The mean of both directions' losses over the windows `batch.inputs` + the last of `batch.targets`."""
        window = torch.cat([batch.inputs[:, :1], batch.targets], dim=1)  # (B, T + 1)
        forward, backward = self.direction_losses(window)
        return (forward + backward) / 2


class ScalarMix(nn.Module):
    """ELMo's combination of layers (…, L, D) → (…, D): softmax(w) weights the layers, γ scales the sum.

    Starts as the plain average (w = 0, γ = 1); a task learns w and γ.
    """

    def __init__(self, layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, layers: Tensor) -> Tensor:
        return self.scale * torch.einsum("...ld,l->...d", layers, self.weights.softmax(0))


__all__ = ["BiLM", "BiLMConfig", "CharCNN", "ScalarMix", "word_chars"]
