"""`folio caption`: image captioning with visual attention, end to end.

    >>> from folio.tasks.caption import ImageCaptioner
    >>> cap = ImageCaptioner.from_pretrained("runs/caption")                       # doctest: +SKIP
    >>> out = cap.describe(["scene.png"], beam_size=3, return_attention=True)      # doctest: +SKIP
    >>> out[0].text, out[0].attention.shape     # one (grid × grid) map per word and one for </s>  # doctest: +SKIP
    ('a small red circle left of a large blue square', torch.Size([10, 16, 16]))

Data: `scenes` (generated shapes with captions and bounding boxes, the default), `easyvqa` (the
easy-vqa package's images, captioned "a blue rectangle" from its answers), or a folder with images and
a COCO-captions or Karpathy Flickr8k JSON file. Evaluation: corpus BLEU-4 (sacrebleu, every reference of
an image), exact match (the caption equals one of its references) and, on scenes, `localization`: the
attention mass inside the box of each object when the word naming it is emitted, beside what uniform
attention would give.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from folio.data.images import (
    CaptionExample,
    easy_vqa_splits,
    load_image,
    parse_scene_caption,
    read_caption_folder,
    resize_array,
    scene_splits,
)
from folio.data.pairs import EOS, PAD, SOS, SPACE, WordTokenizer, load_tokenizer, pad_targets
from folio.decoding.beam import beam_search, check_decoding_options, greedy_decode
from folio.errors import CheckpointError, ConfigError, DataError
from folio.models.captioner import CaptionBatch, Captioner, CaptionerConfig
from folio.runtime import init_distributed, seed_everything, select_device, shutdown_distributed
from folio.training.checkpoint import load_weights, read_config, resume_directory
from folio.training.trainer import TrainConfig, Trainer

TASK = "caption"
TOKENIZER = "tokenizer.json"


def _note(message: str) -> None:
    print(f"folio: note: {message}", file=sys.stderr)


# ---- data --------------------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """Where the images come from; saved in config.json so `evaluate` can rebuild the same test split."""

    data: str = "scenes"  # scenes | easyvqa | DIR
    image_size: int = 64
    scenes_train: int = 20_000
    scenes_valid: int = 500
    scenes_test: int = 1_000
    scenes_objects: tuple[int, int] = (2, 4)  # fewest and most shapes in a scene
    split_seed: int = 0

    def __post_init__(self):
        self.scenes_objects = tuple(self.scenes_objects)

    def load(self, only: str | None = None) -> dict[str, list[CaptionExample]]:
        """The train/valid/test splits; `only` names the one split needed (the others may come back empty)."""
        if self.data == "scenes":  # each split has its own seed, so generating one alone gives the same images
            counts = {"train": self.scenes_train, "valid": self.scenes_valid, "test": self.scenes_test}
            if only is not None:
                counts = {name: count if name == only else 0 for name, count in counts.items()}
            return scene_splits(**counts, seed=self.split_seed, size=self.image_size,
                                min_objects=self.scenes_objects[0], max_objects=self.scenes_objects[1])
        if self.data == "easyvqa":
            splits = easy_vqa_splits(seed=self.split_seed)
            return {name: [_resized(e, self.image_size) for e in examples] for name, examples in splits.items()}
        if not Path(self.data).is_dir():
            raise DataError(f"--data {self.data}: not 'scenes', 'easyvqa' or a folder of images with a captions JSON file")
        return read_caption_folder(self.data, self.image_size, note=_note)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _resized(example: CaptionExample, size: int) -> CaptionExample:
    return CaptionExample(resize_array(example.image, size), example.captions, example.objects, example.name)


def images_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays → (N, 3, H, W) uint8."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def make_batch(images: torch.Tensor, targets: list[list[int]] | None = None) -> CaptionBatch:
    """uint8 images (B, 3, H, W) and caption ids (no specials) → a CaptionBatch with SOS/EOS added."""
    pixels = images.float() / 255.0
    if targets is None:
        return CaptionBatch(pixels)
    return CaptionBatch(pixels, *pad_targets(targets))


class CaptionBatches:
    """(image, caption) pairs, every reference of an image its own pair, reshuffled each epoch from
    (seed, epoch) so that resume is exact; under torchrun each rank takes its rows of the global batch."""

    stateful = False

    def __init__(self, images: torch.Tensor, pairs: list[tuple[int, list[int]]], batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if len(pairs) < batch_size * world_size:
            raise DataError(f"{len(pairs)} training captions are fewer than one batch of {batch_size * world_size}")
        self.images, self.pairs = images, pairs
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._epoch: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.pairs) // (self.batch_size * self.world_size)

    def batch(self, epoch: int, index: int) -> CaptionBatch:
        if self._epoch is None or self._epoch[0] != epoch:
            order = list(range(len(self.pairs)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epoch = (epoch, order)
        global_batch = self.batch_size * self.world_size
        rows = self._epoch[1][index * global_batch : (index + 1) * global_batch][self.rank :: self.world_size]
        return make_batch(self.images[rows], [self.pairs[i][1] for i in rows])


@torch.no_grad()
def teacher_forced_loss(model: Captioner, images: torch.Tensor, targets: list[list[int]], batch_size: int = 256) -> float:
    """Mean cross-entropy per caption token (validation), without the attention penalty."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(targets), batch_size):
        batch = make_batch(images[start : start + batch_size], targets[start : start + batch_size]).to(device)
        total += model.loss(batch, reduction="sum").item()
        count += batch.num_tokens
    return total / max(count, 1)


@dataclass
class CaptionTrainOptions:
    """Everything `folio caption train` accepts, with the CLI's defaults."""

    data: DataSpec = field(default_factory=DataSpec)
    out: str = "runs/caption"
    model: dict = field(default_factory=dict)  # CaptionerConfig fields except vocabulary size, ids and image size
    batch_size: int = 64
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_time=600))
    device: str = "auto"
    resume: str | None = None
    progress: bool = True


def train(options: CaptionTrainOptions) -> dict:
    """Train a captioning model; returns the trainer's summary."""
    device = select_device(options.device)
    dist_info = init_distributed(device)
    try:
        seed_everything(options.train.seed + dist_info.rank)
        out = Path(options.out)
        resume_dir, saved = resume_directory(options.resume, out, TASK)
        data = DataSpec(**{**options.data.to_dict(), **saved["data_spec"]}) if resume_dir is not None else options.data
        splits = data.load()
        if not splits["train"] or not splits["valid"]:
            raise DataError(f"--data {data.data}: too few images to split into train and valid sets")
        if resume_dir is not None:
            tokenizer = load_tokenizer(resume_dir / TOKENIZER)
            model_config = CaptionerConfig.from_dict(saved["model"])
        else:
            tokenizer = WordTokenizer.fit(c for e in splits["train"] for c in e.captions)
            longest = max(len(tokenizer.encode(c)) for e in splits["train"] for c in e.captions)
            model_config = CaptionerConfig(vocab_size=len(tokenizer), image_size=data.image_size, pad_id=PAD,
                                           sos_id=SOS, eos_id=EOS, max_len=longest + 5, **options.model)
        train_images = images_tensor([e.image for e in splits["train"]])
        pairs = [(i, tokenizer.encode(c)) for i, e in enumerate(splits["train"]) for c in e.captions if c.strip()]
        valid_images = images_tensor([e.image for e in splits["valid"]])
        valid_targets = [tokenizer.encode(e.captions[0]) for e in splits["valid"]]
        batches = CaptionBatches(train_images, pairs, options.batch_size, seed=options.train.seed,
                                 rank=dist_info.rank, world_size=dist_info.world_size)
        model = Captioner(model_config)
        saved_config = {
            "task": TASK,
            "model": model_config.to_dict(),
            "data_spec": data.to_dict(),
            "data": {"batch_size": options.batch_size},
            "train": options.train.to_dict(),
        }
        trainer = Trainer(
            model, batches, options.train, out,
            evaluate=lambda m: teacher_forced_loss(m, valid_images, valid_targets),
            saved_config=saved_config, write_extras=lambda directory: tokenizer.save(directory / TOKENIZER),
            device=device, dist_info=dist_info, progress=options.progress,
        )
        if resume_dir is not None:
            trainer.resume(resume_dir)
        if dist_info.is_main:
            params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            trainer.progress.message(
                f"{model_config.describe()}, {params:,} trained parameters; {len(tokenizer)} words; "
                f"{len(splits['train']):,} training images ({len(pairs):,} captions), {len(splits['valid']):,} validation; "
                f"device {device}" + (f", resuming at step {trainer.step}" if resume_dir is not None else "")
            )
        return trainer.train()
    finally:
        shutdown_distributed()


# ---- inference -------------------------------------------------------------------------------------
@dataclass
class Caption:
    name: str
    text: str
    score: float  # length-penalised log-probability
    words: list[str] = field(default_factory=list)  # the generated words, then "</s>"
    attention: torch.Tensor | None = None  # (len(words), grid, grid): where the model looked for each word
    n_best: list[Caption] = field(default_factory=list)  # best first, when num_return > 1


class ImageCaptioner:
    """A trained captioning model with its vocabulary: describe images, evaluate, show attention."""

    def __init__(self, model: Captioner, tokenizer: WordTokenizer, config: dict):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> ImageCaptioner:
        config = read_config(directory, TASK)
        try:
            # The encoder's weights are in model.safetensors: no need to read the package's copy again.
            model_config = CaptionerConfig.from_dict({**config["model"], "pretrained": False})
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"{directory}/config.json has no valid 'model' section: {err}") from err
        model = Captioner(model_config)
        load_weights(model, directory)
        if not (Path(directory) / TOKENIZER).exists():
            raise CheckpointError(f"{directory} has no {TOKENIZER}")
        return cls(model.to(select_device(device)), load_tokenizer(Path(directory) / TOKENIZER), config)

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def load(self, path: str | Path) -> np.ndarray:
        """An image file → (size, size, 3) uint8, converted and resized with a note when needed."""
        return load_image(path, self.image_size, note=_note)

    def decode_image(self, data: str | bytes, name: str) -> np.ndarray:
        """An image file's bytes, or their base64 text (the HTTP API's form) → (size, size, 3) uint8."""
        if isinstance(data, str):
            import base64
            import binascii

            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as err:
                raise DataError(f"{name} is not valid base64 ({err}); send the image file's bytes base64-encoded") from err
        return load_image(data, self.image_size, name=name)

    @torch.inference_mode()
    def describe(
        self,
        images: list,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        num_return: int = 1,
        return_attention: bool = False,
        batch_size: int = 64,
        names: list[str] | None = None,
    ) -> list[Caption]:
        """Captions for images given as file paths or (H, W, 3) uint8 arrays; beam_size 1 is greedy."""
        check_decoding_options(beam_size, num_return, length_penalty, 0)
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        names = names or [str(i) if isinstance(i, (str, Path)) else f"image {n + 1}" for n, i in enumerate(images)]
        arrays = [self.load(i) if isinstance(i, (str, Path)) else self._check_array(i, n) for i, n in zip(images, names, strict=True)]
        results: list[Caption] = []
        model, limit = self.model, self.model.config.max_len
        for start in range(0, len(arrays), batch_size):
            batch = make_batch(images_tensor(arrays[start : start + batch_size])).to(self.device)
            state = model.encode(batch.images)
            count = batch.images.size(0)
            max_lengths = torch.full((count,), limit, device=self.device)
            if beam_size == 1:
                decoded = [[h] for h in greedy_decode(model.decode_step, state, count, SOS, EOS, max_lengths, self.device)]
            else:
                decoded = beam_search(model.decode_step, model.reorder_state, model.expand_state(state, beam_size), count,
                                      SOS, EOS, beam_size, max_lengths, length_penalty, 0, num_return, device=self.device,
                                      keep_attention=return_attention)
            for offset, hyps in enumerate(decoded):
                results.append(self._to_caption(names[start + offset], hyps, return_attention))
        return results

    def _check_array(self, array: np.ndarray, name: str) -> np.ndarray:
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise DataError(f"{name}: expected an (H, W, 3) uint8 RGB array, got {array.dtype} {array.shape}")
        if array.shape[:2] != (self.image_size, self.image_size):
            _note(f"{name}: {array.shape[1]}×{array.shape[0]} array resized to {self.image_size}×{self.image_size}")
        return resize_array(array, self.image_size)

    def _to_caption(self, name: str, hyps, with_attention: bool) -> Caption:
        grid = self.model.config.grid_size
        captions = []
        for hyp in hyps:
            words = [self.tokenizer.symbols[i].lstrip(SPACE) for i in hyp.tokens] + ["</s>"]
            attention = None
            if with_attention and hyp.attention is not None:
                attention = hyp.attention.float().cpu().view(-1, grid, grid)  # (T+1, grid, grid)
            captions.append(Caption(name, self.tokenizer.decode(hyp.tokens), hyp.score, words, attention))
        best = captions[0]
        best.n_best = captions if len(captions) > 1 else []
        return best

    def evaluate(self, examples: list[CaptionExample], beam_size: int = 1, batch_size: int = 64, **options) -> dict:
        """BLEU-4 (sacrebleu, all references), exact match, n; on scenes also localization and its uniform baseline."""
        if not examples:
            raise DataError("no images to evaluate")
        scenes = all(e.objects for e in examples)
        captions = self.describe([e.image for e in examples], beam_size=beam_size, batch_size=batch_size,
                                 return_attention=scenes, names=[e.name for e in examples], **options)
        hypotheses = [c.text for c in captions]
        result = score_captions(hypotheses, [e.captions for e in examples])
        if scenes:
            result |= localization(captions, examples, self.image_size)
        return result | {"hypotheses": hypotheses}


def score_captions(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU-4 against every reference of each image (sacrebleu), and exact match with any of them.

    >>> score_captions(["a blue circle"], [["a blue circle", "a circle"]])["bleu4"]
    100.0
    """
    from sacrebleu.metrics import BLEU

    most = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    # effective_order: n-gram orders that no caption is long enough to have are left out instead of zeroing the
    # score (three-word captions have no 4-grams: plain corpus BLEU-4 would be 0 even when every caption is right).
    bleu = BLEU(effective_order=True)
    score = bleu.corpus_score(hypotheses, streams)
    exact = sum(h.strip() in {r.strip() for r in refs} for h, refs in zip(hypotheses, references, strict=True))
    return {"bleu4": round(score.score, 2), "exact_match": round(exact / len(hypotheses), 5), "n": len(hypotheses),
            "signature": str(bleu.get_signature())}


def box_mass(attention: torch.Tensor, box: tuple[int, int, int, int], image_size: int) -> float:
    """The share of one (grid, grid) attention map that falls inside a pixel box (x0, y0, x1, y1), each cell's
    weight spread evenly over the pixels it covers."""
    grid = attention.size(-1)
    edges = torch.linspace(0, image_size, grid + 1, dtype=torch.float64)
    x0, y0, x1, y1 = box

    def overlap(lo: float, hi: float) -> torch.Tensor:  # (grid,) share of each cell's extent inside [lo, hi)
        return ((edges[1:].clamp(max=hi) - edges[:-1].clamp(min=lo)).clamp(min=0)) / (edges[1:] - edges[:-1])

    inside = overlap(y0, y1)[:, None] * overlap(x0, x1)[None, :]  # (grid, grid)
    return float((attention.double() * inside).sum())


def localization(captions: list[Caption], examples: list[CaptionExample], image_size: int) -> dict:
    """For every object of every scene: the attention mass inside its box while the caption emits the noun that
    names it (0 when the caption never names it), averaged; and the same for uniform attention."""
    masses, uniform = [], []
    for caption, example in zip(captions, examples, strict=True):
        phrases = _noun_positions(caption.words)
        used: set[int] = set()
        for k, obj in enumerate(example.objects):
            uniform.append((obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1]) / image_size**2)
            description = (obj.size, obj.colour, obj.shape)
            # The k-th phrase if it names this object, else the first unused phrase that does.
            candidates = ([k] if k < len(phrases) and phrases[k][0] == description else []) + [
                j for j, (d, _) in enumerate(phrases) if d == description
            ]
            match = next((j for j in candidates if j not in used), None)
            if match is None or caption.attention is None:
                masses.append(0.0)
                continue
            used.add(match)
            masses.append(box_mass(caption.attention[phrases[match][1]], obj.box, image_size))
    return {"localization": round(float(np.mean(masses)), 4), "localization_uniform": round(float(np.mean(uniform)), 4),
            "localization_objects": len(masses)}


def _noun_positions(words: list[str]) -> list[tuple[tuple[str, str, str], int]]:
    """Each object phrase of a generated caption: its (size, colour, shape) and the index of its noun."""
    found, start = [], 0
    for description in parse_scene_caption(" ".join(w for w in words if w != "</s>")):
        noun = words.index(description[2], start)
        found.append((description, noun))
        start = noun + 1
    return found


def show_attention(image: np.ndarray, caption: Caption, path: str | Path) -> None:
    from folio.render import attention_overlays

    attention = caption.attention
    if attention is None:
        raise ConfigError("this caption has no attention weights: describe it with return_attention=True")
    attention_overlays(image, [a.numpy() for a in attention], caption.words, path, title=caption.text)
