"""Synthetic scenes for the caption task, generated in code.

A white canvas with 2-4 coloured circles, squares and triangles, small or large, that never touch, and one
caption that names them left to right with the relation between neighbours: "a small red circle left of a
large blue square above a small green triangle". Each object keeps its exact pixel box, so attention maps
can be scored against where the object really is.
"""

from __future__ import annotations

import random
import re

import numpy as np
from PIL import Image, ImageDraw

from folio.data.images import CaptionExample, SceneObject
from folio.errors import ConfigError

SCENE_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 0),
    "purple": (140, 50, 180),
    "orange": (255, 130, 0),
}
SCENE_COLOURS: tuple[str, ...] = tuple(SCENE_RGB)
SCENE_SHAPES = ("circle", "square", "triangle")
SCENE_SIZES = ("small", "large")
SCENE_SIDES = {"small": (10, 14), "large": (18, 24)}  # side in pixels on a 64-pixel canvas; scaled with it
SCENE_RELATIONS = ("left of", "above", "below")
SCENE_GAP = 2  # empty pixels at least between two objects' boxes
_PLACEMENT_TRIES = 100  # for one object, before the scene is started again
_SCENE_RESTARTS = 1_000


def _sides(size_class: str, size: int) -> tuple[int, int]:
    low, high = SCENE_SIDES[size_class]
    scale = size / 64
    return max(2, round(low * scale)), max(2, round(high * scale))


def _draw_shape(shape: str, side: int) -> Image.Image:
    """A side×side "L" mask of the filled shape (no anti-aliasing, so its pixels and box are exact)."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    last = side - 1  # Pillow's coordinates are inclusive
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, last, last), fill=255)
    else:  # isosceles, pointing up
        draw.polygon([(0, last), (last, last), (last / 2, 0)], fill=255)
    return mask


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap or b[1] >= a[3] + gap


def scene_relation(first: SceneObject, second: SceneObject) -> str:
    """How `first` stands to `second`, the next object to its right in caption order."""
    (x0, y0), (x1, y1) = first.centre, second.centre
    dx, dy = x1 - x0, y1 - y0
    if dx >= abs(dy):
        return "left of"
    return "above" if dy > 0 else "below"


def scene_caption(objects: list[SceneObject]) -> str:
    """The caption of objects already in caption order (left to right by box centre)."""
    words = [f"a {objects[0].size} {objects[0].colour} {objects[0].shape}"]
    for first, second in zip(objects, objects[1:], strict=False):
        words.append(f"{scene_relation(first, second)} a {second.size} {second.colour} {second.shape}")
    return " ".join(words)


def generate_scene(rng: random.Random, size: int = 64, min_objects: int = 2, max_objects: int = 4) -> CaptionExample:
    """One synthetic scene drawn with `rng`: non-touching shapes on white, with its caption and boxes.

    >>> generate_scene(random.Random(0)).captions    # doctest: +SKIP
    ['a large orange triangle left of a small blue circle above a small red square']
    """
    if size < 24:
        raise ConfigError(f"scene size {size}: use at least 24 pixels so small and large shapes differ")
    if not 1 <= min_objects <= max_objects:
        raise ConfigError(f"scene objects {min_objects}-{max_objects}: need 1 <= min_objects <= max_objects")
    margin = max(1, round(2 * size / 64))
    for _ in range(_SCENE_RESTARTS):
        objects = _place_objects(rng, size, rng.randint(min_objects, max_objects), margin)
        if objects is not None:
            break
    else:
        raise ConfigError(f"cannot fit {min_objects}-{max_objects} shapes on a {size}×{size} canvas; ask for fewer")
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    for obj, mask, corner in objects:
        canvas.paste(SCENE_RGB[obj.colour], (*corner, corner[0] + mask.width, corner[1] + mask.height), mask)
    ordered = sorted((obj for obj, _, _ in objects), key=lambda o: (o.centre[0], o.centre[1]))
    return CaptionExample(np.array(canvas, dtype=np.uint8), [scene_caption(ordered)], ordered, "scene")


def _place_objects(rng: random.Random, size: int, count: int, margin: int):
    """`count` objects at random places at least SCENE_GAP apart, or None when one would not fit."""
    placed: list[tuple[SceneObject, Image.Image, tuple[int, int]]] = []
    for _ in range(count):
        shape, colour, size_class = rng.choice(SCENE_SHAPES), rng.choice(SCENE_COLOURS), rng.choice(SCENE_SIZES)
        side = rng.randint(*_sides(size_class, size))
        mask = _draw_shape(shape, side)
        left, top, right, bottom = mask.getbbox()  # exclusive right/bottom: the tight box of the drawn pixels
        for _ in range(_PLACEMENT_TRIES):
            x, y = rng.randint(margin, size - margin - side), rng.randint(margin, size - margin - side)
            box = (x + left, y + top, x + right, y + bottom)
            if all(_apart(box, other.box, SCENE_GAP) for other, _, _ in placed):
                placed.append((SceneObject(shape, colour, size_class, box), mask, (x, y)))
                break
        else:
            return None
    return placed


def scene_examples(count: int, seed: int, size: int = 64, min_objects: int = 2, max_objects: int = 4) -> list[CaptionExample]:
    """`count` scenes from `random.Random(seed)`, named "scene 0", "scene 1", ..."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        example = generate_scene(rng, size, min_objects, max_objects)
        example.name = f"scene {index}"
        examples.append(example)
    return examples


def scene_splits(train: int = 20_000, valid: int = 500, test: int = 1_000, seed: int = 0, size: int = 64,
                 min_objects: int = 2, max_objects: int = 4) -> dict[str, list[CaptionExample]]:
    """Train, valid and test scenes from the disjoint seeds 3·seed, 3·seed+1 and 3·seed+2.

    No image occurs in two splits (a repeat, which is very unlikely, is replaced by the next scene).

    >>> {k: len(v) for k, v in scene_splits(train=10, valid=2, test=2).items()}
    {'train': 10, 'valid': 2, 'test': 2}
    """
    seen: set[bytes] = set()
    splits = {}
    for offset, (split, count) in enumerate((("test", test), ("valid", valid), ("train", train))):
        rng = random.Random(3 * seed + (2, 1, 0)[offset])
        examples = []
        while len(examples) < count:
            example = generate_scene(rng, size, min_objects, max_objects)
            key = example.image.tobytes()
            if key in seen:
                continue
            seen.add(key)
            example.name = f"{split} scene {len(examples)}"
            examples.append(example)
        splits[split] = examples
    return {"train": splits["train"], "valid": splits["valid"], "test": splits["test"]}


_SCENE_PHRASE = re.compile(
    rf"\b({'|'.join(SCENE_SIZES)})\s+({'|'.join(SCENE_COLOURS)})\s+({'|'.join(SCENE_SHAPES)})\b"
)


def parse_scene_caption(caption: str) -> list[tuple[str, str, str]]:
    """(size, colour, shape) of each object phrase in order; what does not parse is skipped.

    >>> parse_scene_caption("a small red circle left of a large blu square above a large green triangle")
    [('small', 'red', 'circle'), ('large', 'green', 'triangle')]
    """
    return [match.groups() for match in _SCENE_PHRASE.finditer(caption.lower())]
