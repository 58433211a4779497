"""The 5,000 one-shape images of the `easy-vqa` package, captioned "a blue rectangle" from the answers to its
questions (and, where the questions leave it open, from the pixels).
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from folio.data.images import CaptionExample
from folio.errors import ConfigError, DataError

EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")
# The package draws every shape in one of these named colours; its anti-aliased edges are blends.
EASY_VQA_RGB: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
}
EASY_VQA_COLOURS = tuple(EASY_VQA_RGB)


def easy_vqa_dir() -> Path:
    """The `data` folder of the installed easy-vqa package."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the easy-vqa images need the easy-vqa package: pip install easy-vqa==1.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    for split in ("train", "test"):
        if not (path / split / "questions.json").is_file() or not (path / split / "images").is_dir():
            raise DataError(f"easy-vqa is installed but {path / split} lacks questions.json or images/; "
                            "reinstall it: pip install --force-reinstall easy-vqa==1.0")
    return path


def _easy_vqa_facts(questions_file: Path) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
    """Per image id, the colours and shapes its questions and answers leave possible.

    "what color is the shape?" → blue pins the colour, "what is the blue shape?" → rectangle pins both,
    "is there not a red shape?" → yes rules red out, and so on. Not every image is asked about both.
    """
    try:
        questions = json.loads(questions_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {questions_file}: {err}; reinstall easy-vqa==1.0") from err
    colours: dict[int, set[str]] = {}
    shapes: dict[int, set[str]] = {}
    for number, entry in enumerate(questions):
        try:
            question, answer, image_id = entry
            image_id = int(image_id)
        except (TypeError, ValueError) as err:
            raise DataError(f"{questions_file}, entry {number}: expected [question, answer, image_id], found {entry!r}") from err
        words = question.lower().rstrip("?").split()
        named_shapes = [w for w in words if w in EASY_VQA_SHAPES]
        named_colours = [w for w in words if w in EASY_VQA_COLOURS]
        colour_set = colours.setdefault(image_id, set(EASY_VQA_COLOURS))
        shape_set = shapes.setdefault(image_id, set(EASY_VQA_SHAPES))
        if answer in ("yes", "no"):
            present = (answer == "yes") != ("not" in words or "no" in words)
            for shape in named_shapes:
                shape_set &= {shape} if present else set(EASY_VQA_SHAPES) - {shape}
            for colour in named_colours:
                colour_set &= {colour} if present else set(EASY_VQA_COLOURS) - {colour}
        elif answer in EASY_VQA_SHAPES:  # "what shape is in the image?", "what is the blue shape?"
            shape_set &= {answer}
            for colour in named_colours:
                colour_set &= {colour}
        elif answer in EASY_VQA_COLOURS:  # "what color is the shape?", "what is the color of the circle?"
            colour_set &= {answer}
            for shape in named_shapes:
                shape_set &= {shape}
        else:
            raise DataError(f"{questions_file}, entry {number}: unknown answer {answer!r}; reinstall easy-vqa==1.0")
    return colours, shapes


def _easy_vqa_colour(pixels: np.ndarray) -> str | None:
    """The named colour most pixels have exactly, or None when no colour clearly wins."""
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    counts = [int((packed == (r << 16 | g << 8 | b)).sum()) for r, g, b in EASY_VQA_RGB.values()]
    order = sorted(range(len(counts)), key=counts.__getitem__, reverse=True)
    if counts[order[0]] < 5 or counts[order[1]] * 2 > counts[order[0]]:
        return None
    return EASY_VQA_COLOURS[order[0]]


def _easy_vqa_shape(pixels: np.ndarray, colour: str) -> str | None:
    """Rectangles fill their box; circles match themselves turned 180°, triangles do not (or None)."""
    mask = (pixels == np.array(EASY_VQA_RGB[colour], dtype=np.uint8)).all(axis=-1)
    rows, columns = np.nonzero(mask)
    if len(rows) < 5:
        return None
    mask = mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    if mask.mean() >= 0.99:
        return "rectangle"
    turned = mask[::-1, ::-1]
    symmetry = (mask & turned).sum() / (mask | turned).sum()
    # On the package's 5,000 images circles score >= 0.77 and triangles <= 0.48.
    if symmetry >= 0.65:
        return "circle"
    if symmetry <= 0.55:
        return "triangle"
    return None


def _easy_vqa_split(data: Path, split: str) -> list[CaptionExample]:
    colours, shapes = _easy_vqa_facts(data / split / "questions.json")
    folder = data / split / "images"
    ids = sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit())
    if not ids:
        raise DataError(f"{folder} holds no images; reinstall easy-vqa==1.0")
    examples = []
    for image_id in ids:
        path = folder / f"{image_id}.png"
        try:
            with Image.open(path) as opened:
                pixels = np.array(opened.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DataError(f"easy-vqa image {path} is not a readable image ({err}); reinstall easy-vqa==1.0") from err
        colour_set = colours.get(image_id, set(EASY_VQA_COLOURS))
        shape_set = shapes.get(image_id, set(EASY_VQA_SHAPES))
        # Some images are never asked their colour or shape outright: the pixels settle it then.
        colour = next(iter(colour_set)) if len(colour_set) == 1 else _easy_vqa_colour(pixels)
        shape = next(iter(shape_set)) if len(shape_set) == 1 else colour and _easy_vqa_shape(pixels, colour)
        if colour not in colour_set or shape not in shape_set:
            raise DataError(f"easy-vqa {split} image {image_id} ({path}) cannot be captioned: its questions leave "
                            f"colour {sorted(colour_set)} and shape {sorted(shape_set)} and its pixels say "
                            f"{colour or '?'} {shape or '?'}; reinstall easy-vqa==1.0")
        examples.append(CaptionExample(pixels, [f"a {colour} {shape}"], name=str(path)))
    return examples


def easy_vqa_splits(seed: int = 0, valid_fraction: float = 0.1) -> dict[str, list[CaptionExample]]:
    """easy-vqa's 64×64 one-shape images captioned "a {colour} {shape}".

    Train and valid share the package's 4,000 training images (a fixed-seed `valid_fraction` of them is
    valid); test is its 1,000 test images. Each split is sorted by image id.

    >>> {k: len(v) for k, v in easy_vqa_splits().items()}    # doctest: +SKIP
    {'train': 3600, 'valid': 400, 'test': 1000}
    """
    if not 0 <= valid_fraction < 1:
        raise ConfigError(f"valid_fraction {valid_fraction}: it must be at least 0 and below 1")
    data = easy_vqa_dir()
    train = _easy_vqa_split(data, "train")
    chosen = set(random.Random(seed).sample(range(len(train)), round(valid_fraction * len(train))))
    return {
        "train": [e for i, e in enumerate(train) if i not in chosen],
        "valid": [e for i, e in enumerate(train) if i in chosen],
        "test": _easy_vqa_split(data, "test"),
    }
