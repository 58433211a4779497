"""Caption data: synthetic scenes, easy-vqa, image files and user caption folders."""

import importlib.util
import json
import random
import re

import numpy as np
import pytest
from PIL import Image, ImageFile

from folio.data import images as images_module
from folio.data.images import (
    SCENE_COLOURS,
    SCENE_RGB,
    SCENE_SHAPES,
    CaptionExample,
    easy_vqa_splits,
    generate_scene,
    load_image,
    normalise_caption,
    parse_scene_caption,
    read_caption_folder,
    scene_examples,
    scene_splits,
)
from folio.errors import DataError

WHITE = (255, 255, 255)


# ---- synthetic scenes ------------------------------------------------------------------------------
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


# ---- easy-vqa ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def easy_vqa():
    if importlib.util.find_spec("easy_vqa") is None:
        pytest.skip("easy-vqa is not installed")
    return easy_vqa_splits()


def test_easy_vqa_loads_every_image_with_a_caption(easy_vqa):
    assert {k: len(v) for k, v in easy_vqa.items()} == {"train": 3600, "valid": 400, "test": 1000}
    caption = re.compile(r"a (red|green|blue|black|gray|yellow|teal|brown) (circle|rectangle|triangle)")
    for part in easy_vqa.values():
        for example in part:
            assert example.image.shape == (64, 64, 3) and example.image.dtype == np.uint8
            assert len(example.captions) == 1 and caption.fullmatch(example.captions[0])
    assert "a blue rectangle" in {e.captions[0] for e in easy_vqa["train"]}
    ids = {split: [int(e.name.rsplit("/", 1)[-1][:-4]) for e in part] for split, part in easy_vqa.items()}
    assert all(v == sorted(v) for v in ids.values())
    assert not set(ids["train"]) & set(ids["valid"]) and len(set(ids["train"]) | set(ids["valid"])) == 4000
    assert ids["valid"] == [int(e.name.rsplit("/", 1)[-1][:-4]) for e in easy_vqa_splits(seed=0)["valid"]]


def test_easy_vqa_pixels_agree_with_the_answers(easy_vqa):
    # Images whose questions never name the colour or shape are captioned from their pixels: check that
    # reading on every image whose questions do.
    data = images_module.easy_vqa_dir()
    colours, shapes = images_module._easy_vqa_facts(data / "test" / "questions.json")
    checked = 0
    for example in easy_vqa["test"]:
        image_id = int(example.name.rsplit("/", 1)[-1][:-4])
        colour = images_module._easy_vqa_colour(example.image)
        assert colour is not None
        if len(colours[image_id]) == 1:
            assert {colour} == colours[image_id]
        if len(shapes[image_id]) == 1:
            assert {images_module._easy_vqa_shape(example.image, colour)} == shapes[image_id]
            checked += 1
    assert checked > 800


def test_easy_vqa_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(images_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install easy-vqa==1\.0"):
        easy_vqa_splits()


# ---- image files ----------------------------------------------------------------------------------
def test_load_image_converts_and_resizes_with_a_note(tmp_path):
    notes = []

    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, 20:, 3] = 255  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png", 64, notes.append)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:, :20] == 255).all() and (out[:, 44:] == (200, 0, 0)).all()
    assert len(notes) == 1 and "rgba.png" in notes[0] and "40×30" in notes[0] and "RGBA" in notes[0]
    assert "white" in notes[0] and "resized to 64×64" in notes[0]

    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
    palette.paste(1, (0, 0, 8, 16))
    palette.info["transparency"] = 1  # index 1 (the left half) is transparent
    palette.save(tmp_path / "palette.png", transparency=1)
    out = load_image(tmp_path / "palette.png", 32, notes.append)
    assert out.shape == (32, 32, 3) and (out == 255).all()
    assert len(notes) == 2 and "palette.png" in notes[1] and " P " in notes[1]

    Image.new("L", (50, 50), 90).save(tmp_path / "grey.png")
    out = load_image(tmp_path / "grey.png", 64, notes.append)
    assert (out == 90).all() and len(notes) == 3 and " L " in notes[2]

    Image.fromarray(np.full((64, 64), 40_000, dtype=np.uint16)).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png", 64, notes.append)
    assert abs(int(out[0, 0, 0]) - 40_000 // 257) <= 1 and len(notes) == 4  # rescaled, not clipped to white

    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    out = load_image(tmp_path / "cmyk.jpg", 64, notes.append)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60 and len(notes) == 5 and "CMYK" in notes[4]

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    assert (load_image(tmp_path / "plain.png", 64, notes.append) == pixels).all() and len(notes) == 5


def test_load_image_refuses_what_is_not_an_image(tmp_path):
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("text.png", "truncated.png", "empty.png"):
        with pytest.raises(DataError, match=rf"{name} is not a readable image"):
            load_image(tmp_path / name, 64)
    with pytest.raises(DataError, match=r"missing\.png is not a readable image: there is no such file"):
        load_image(tmp_path / "missing.png", 64)



def test_load_image_refuses_too_many_pixels_from_the_header(tmp_path, monkeypatch):
    Image.new("L", (300, 200), 255).save(tmp_path / "canvas.png")
    data = (tmp_path / "canvas.png").read_bytes()
    assert load_image(data, 8, max_pixels=300 * 200).shape == (8, 8, 3)  # at the limit: read
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded an image over the limit"))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded an image over the limit"))
    with pytest.raises(DataError, match=r"^images\[2\] is 300×200: 60,000 pixels, over the limit of 59,999; send a "
                                        r"smaller image \(the model sees 8×8\)$"):
        load_image(data, 8, name="images[2]", max_pixels=300 * 200 - 1)


# ---- caption folders --------------------------------------------------------------------------------
def _image(path, colour, size=(48, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_coco_folder(tmp_path):
    folder = tmp_path / "coco"
    images = [{"id": i, "file_name": f"img{i}.png"} for i in range(20)]
    annotations = []
    for i in range(20):
        _image(folder / "images" / f"img{i}.png", (i * 10, 0, 0))
        annotations += [{"image_id": i, "caption": f"A Red  square, number {i}."},
                        {"image_id": i, "caption": f"The dog's ball -- number {i}!"}]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    notes = []
    splits = read_caption_folder(folder, 32, notes.append)
    assert {k: len(v) for k, v in splits.items()} == {"train": 16, "valid": 2, "test": 2}  # 80/10/10 by image
    assert len(notes) == 20 and "48×40" in notes[0]
    examples = [e for part in splits.values() for e in part]
    assert len({e.name for e in examples}) == 20
    for example in examples:
        assert isinstance(example, CaptionExample) and example.image.shape == (32, 32, 3)
        number = re.search(r"img(\d+)\.png$", example.name).group(1)
        assert example.captions == [f"a red square number {number}", f"the dog's ball number {number}"]
        assert int(example.image[0, 0, 0]) == int(number) * 10
    again = read_caption_folder(folder, 32)
    assert [e.name for e in again["valid"]] == [e.name for e in splits["valid"]]


def test_karpathy_folder(tmp_path):
    folder = tmp_path / "flickr"
    entries = []
    for i, split in enumerate(["train", "train", "restval", "val", "val", "test"]):
        _image(folder / f"{i}.jpg", (0, i * 40, 0), size=(32, 32))
        entries.append({"filename": f"{i}.jpg", "split": split,
                        "sentences": [{"raw": f"Two dogs play, {i}.", "tokens": ["ignored"]},
                                      {"tokens": ["a", "Dog", "runs", str(i)]}]})
    (folder / "dataset_flickr8k.json").write_text(json.dumps({"images": entries, "dataset": "flickr8k"}))
    splits = read_caption_folder(folder, 32)
    assert {k: [e.name.rsplit("/", 1)[-1] for e in v] for k, v in splits.items()} == {
        "train": ["0.jpg", "1.jpg", "2.jpg"], "valid": ["3.jpg", "4.jpg"], "test": ["5.jpg"]}
    assert splits["test"][0].captions == ["two dogs play 5", "a dog runs 5"]


def test_caption_folder_errors_name_the_file(tmp_path):
    folder = tmp_path / "bad"
    _image(folder / "a.png", (0, 0, 0))
    with pytest.raises(DataError, match="holds no captions JSON"):
        read_caption_folder(folder, 32)

    (folder / "labels.json").write_text(json.dumps({"pictures": [], "labels": []}))
    with pytest.raises(DataError, match=r"labels\.json is neither COCO.*'annotations'.*'sentences'"):
        read_caption_folder(folder, 32)
    (folder / "labels.json").unlink()

    (folder / "captions.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"captions\.json, line 2"):
        read_caption_folder(folder, 32)

    images = [{"id": 1, "file_name": "a.png"}]
    (folder / "captions.json").write_text(json.dumps(
        {"images": images, "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 9, "caption": "y"}]}))
    with pytest.raises(DataError, match=r"captions\.json, annotations\[1\]: image_id 9 is not in 'images'"):
        read_caption_folder(folder, 32)

    images.append({"id": 2, "file_name": "gone.png"})
    (folder / "captions.json").write_text(json.dumps(
        {"images": images, "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}]}))
    with pytest.raises(DataError, match=r"captions\.json lists image 'gone\.png'"):
        read_caption_folder(folder, 32)

    (folder / "captions.json").write_text(json.dumps(
        {"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "x"}]}))
    with pytest.raises(DataError, match=r"captions\.json, images\[0\]: missing the 'file_name' field"):
        read_caption_folder(folder, 32)

    (folder / "captions.json").write_text(json.dumps(
        {"images": [{"filename": "a.png", "split": "dev", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(DataError, match=r"captions\.json, images\[0\] \(a\.png\): split 'dev'"):
        read_caption_folder(folder, 32)

    with pytest.raises(DataError, match="does not exist"):
        read_caption_folder(tmp_path / "nowhere", 32)


def test_normalise_caption():
    assert normalise_caption("  A dog's ball,\tON the\n GRASS!! ") == "a dog's ball on the grass"
    assert normalise_caption("black-and-white photo_1") == "black and white photo 1"
