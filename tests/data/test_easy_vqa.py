"""easy-vqa's one-shape images captioned from their questions and pixels."""

import importlib.util
import re

import numpy as np
import pytest

from folio.data import easy_vqa as easy_vqa_module
from folio.data.easy_vqa import easy_vqa_splits
from folio.errors import DataError


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
    data = easy_vqa_module.easy_vqa_dir()
    colours, shapes = easy_vqa_module._easy_vqa_facts(data / "test" / "questions.json")
    checked = 0
    for example in easy_vqa["test"]:
        image_id = int(example.name.rsplit("/", 1)[-1][:-4])
        colour = easy_vqa_module._easy_vqa_colour(example.image)
        assert colour is not None
        if len(colours[image_id]) == 1:
            assert {colour} == colours[image_id]
        if len(shapes[image_id]) == 1:
            assert {easy_vqa_module._easy_vqa_shape(example.image, colour)} == shapes[image_id]
            checked += 1
    assert checked > 800


def test_easy_vqa_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(easy_vqa_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install easy-vqa==1\.0"):
        easy_vqa_splits()
