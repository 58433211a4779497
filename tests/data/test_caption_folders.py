"""A user's caption folder: COCO and Karpathy captions JSON, and errors that name the file."""

import json
import re

import pytest
from PIL import Image

from folio.data.caption_folders import normalise_caption, read_caption_folder
from folio.data.images import CaptionExample
from folio.errors import DataError


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
