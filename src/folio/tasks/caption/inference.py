"""`ImageCaptioner`: a trained captioning model with its vocabulary, from Python.

    >>> from folio.tasks.caption import ImageCaptioner
    >>> cap = ImageCaptioner.from_pretrained("runs/caption")                       # doctest: +SKIP
    >>> out = cap.describe(["scene.png"], beam_size=3, return_attention=True)      # doctest: +SKIP
    >>> out[0].text, out[0].attention.shape     # one (grid × grid) map per word and one for </s>  # doctest: +SKIP
    ('a small red circle left of a large blue square', torch.Size([10, 16, 16]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from folio.data.images import MAX_IMAGE_PIXELS, CaptionExample, load_image, resize_array
from folio.data.pairs import EOS, SOS
from folio.decoding.beam import beam_search, check_decoding_options, greedy_decode
from folio.errors import DataError
from folio.models.captioner import Captioner
from folio.models.registry import load_checkpoint
from folio.runtime import select_device
from folio.tasks.caption.data import images_tensor, make_batch, note
from folio.tasks.caption.metrics import localization, score_captions
from folio.tasks.caption.recipe import TASK
from folio.tokenizers import SPACE, Tokenizer


@dataclass
class Caption:
    """One image's caption; `attention` and `n_best` as `ImageCaptioner.describe` was asked for them."""

    name: str
    text: str
    score: float  # length-penalised log-probability
    words: list[str] = field(default_factory=list)  # the generated words, then "</s>"
    attention: torch.Tensor | None = None  # (len(words), grid, grid): where the model looked for each word
    n_best: list[Caption] = field(default_factory=list)  # best first, when num_return > 1


class ImageCaptioner:
    """A trained captioning model with its vocabulary: describe images, evaluate, show attention."""

    def __init__(self, model: Captioner, tokenizer: Tokenizer, config: dict):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> ImageCaptioner:
        """The model, weights and vocabulary a `folio caption train` directory holds."""
        model, vocabulary, config = load_checkpoint(directory, TASK, select_device(device))
        return cls(model, vocabulary, config)

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def load(self, path: str | Path) -> np.ndarray:
        """An image file → (size, size, 3) uint8, converted and resized with a note when needed."""
        return load_image(path, self.image_size, note=note)

    def decode_image(self, data: str | bytes, name: str) -> np.ndarray:
        """An image file's bytes, or their base64 text (the HTTP API's form) → (size, size, 3) uint8; one of more than
        MAX_IMAGE_PIXELS pixels is refused from its header, before it is decoded."""
        if isinstance(data, str):
            import base64
            import binascii

            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as err:
                raise DataError(f"{name} is not valid base64 ({err}); send the image file's bytes base64-encoded") from err
        return load_image(data, self.image_size, name=name, max_pixels=MAX_IMAGE_PIXELS)

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
            note(f"{name}: {array.shape[1]}×{array.shape[0]} array resized to {self.image_size}×{self.image_size}")
        return resize_array(array, self.image_size)

    def _to_caption(self, name: str, hyps, with_attention: bool) -> Caption:
        grid = self.model.config.grid_size
        captions = []
        for hyp in hyps:
            words = [self.tokenizer.id_to_token(i).lstrip(SPACE) for i in hyp.tokens] + ["</s>"]
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
