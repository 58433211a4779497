"""Synthetic caption scenes: exact boxes, the caption grammar, reproducible and disjoint splits."""

import random
import re

import numpy as np

from folio.data.scenes import (
    SCENE_COLOURS,
    SCENE_RGB,
    SCENE_SHAPES,
    generate_scene,
    parse_scene_caption,
    scene_examples,
    scene_splits,
)

WHITE = (255, 255, 255)


def test_scene_boxes_are_exactly_what_was_drawn():
    rng = random.Random(7)
    counts = set()
    for _ in range(300):
        example = generate_scene(rng)
        image, objects = example.image, example.objects
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert 2 <= len(objects) <= 4
        counts.add(len(objects))
        owner = np.zeros((64, 64), dtype=int)  # how many boxes hold each pixel
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            owner[y0:y1, x0:x1] += 1
            inside = image[y0:y1, x0:x1]
            mine = (inside == SCENE_RGB[obj.colour]).all(-1)
            white = (inside == WHITE).all(-1)
            assert (mine | white).all(), "a box holds only white and its own colour (no blended edges)"
            assert mine[0].any() and mine[-1].any() and mine[:, 0].any() and mine[:, -1].any(), "the box is tight"
            side = max(x1 - x0, y1 - y0)
            assert (10 <= side <= 14) if obj.size == "small" else (18 <= side <= 24)
            fill = mine.mean()
            expected = {"square": (0.99, 1.0), "circle": (0.65, 0.9), "triangle": (0.4, 0.65)}[obj.shape]
            assert expected[0] <= fill <= expected[1], (obj, fill)
        drawn = ~(image == WHITE).all(-1)
        assert (owner[drawn] == 1).all(), "every drawn pixel lies in exactly one box"
        assert owner.max() <= 1, "boxes do not overlap"
        for a in objects:
            for b in objects:
                if a is not b:
                    gap = max(b.box[0] - a.box[2], a.box[0] - b.box[2], b.box[1] - a.box[3], a.box[1] - b.box[3])
                    assert gap >= 2
    assert counts == {2, 3, 4}


def _relation(first, second) -> str:
    (ax, ay), (bx, by) = [((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2) for o in (first, second)]
    dx, dy = bx - ax, by - ay
    assert dx >= 0
    return "left of" if dx >= abs(dy) else "above" if dy > 0 else "below"


def test_scene_caption_follows_the_grammar_and_parses_back():
    phrase = rf"a (small|large) ({'|'.join(SCENE_COLOURS)}) ({'|'.join(SCENE_SHAPES)})"
    grammar = re.compile(rf"{phrase}(?: (?:left of|above|below) {phrase})*")
    for example in scene_examples(200, seed=3):
        (caption,) = example.captions
        assert grammar.fullmatch(caption), caption
        objects = example.objects
        centres = [((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2) for o in objects]
        assert centres == sorted(centres), "objects are in caption order: by centre x, then y"
        expected = f"a {objects[0].size} {objects[0].colour} {objects[0].shape}"
        for first, second in zip(objects, objects[1:], strict=False):
            expected += f" {_relation(first, second)} a {second.size} {second.colour} {second.shape}"
        assert caption == expected
        assert parse_scene_caption(caption) == [(o.size, o.colour, o.shape) for o in objects]


def test_parse_scene_caption_skips_what_does_not_parse():
    text = "a small red circle left of a large blu square above a large green triangle below a small"
    assert parse_scene_caption(text) == [("small", "red", "circle"), ("large", "green", "triangle")]
    assert parse_scene_caption("") == [] and parse_scene_caption("<unk> <unk> left of") == []


def test_scenes_are_reproducible_and_the_splits_disjoint():
    first, again, other = scene_examples(20, seed=5), scene_examples(20, seed=5), scene_examples(20, seed=6)
    assert all((a.image == b.image).all() and a.captions == b.captions and a.objects == b.objects
               for a, b in zip(first, again, strict=True))
    assert any(not (a.image == b.image).all() for a, b in zip(first, other, strict=True))
    assert first[3].name == "scene 3"

    splits = scene_splits(train=300, valid=30, test=40, seed=1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "valid": 30, "test": 40}
    keys = {split: {e.image.tobytes() for e in part} for split, part in splits.items()}
    assert all(len(keys[s]) == len(splits[s]) for s in splits)
    assert not keys["train"] & keys["valid"] and not keys["train"] & keys["test"] and not keys["valid"] & keys["test"]
    repeat = scene_splits(train=300, valid=30, test=40, seed=1)
    assert [e.captions for e in repeat["valid"]] == [e.captions for e in splits["valid"]]
    assert keys["test"] != {e.image.tobytes() for e in scene_splits(train=0, valid=0, test=40, seed=2)["test"]}


def test_scenes_scale_with_the_canvas():
    example = generate_scene(random.Random(0), size=128, min_objects=3, max_objects=3)
    assert example.image.shape == (128, 128, 3) and len(example.objects) == 3
    for obj in example.objects:
        side = max(obj.box[2] - obj.box[0], obj.box[3] - obj.box[1])
        assert (20 <= side <= 28) if obj.size == "small" else (36 <= side <= 48)
