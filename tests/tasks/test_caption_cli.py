import json

import numpy as np
import pytest
import torch
from PIL import Image

from folio.cli import main
from folio.data.images import CaptionExample, SceneObject
from folio.tasks.caption import Caption, ImageCaptioner, box_mass, localization, score_captions

TINY = ["--channels", "16", "32", "32", "--feature-dim", "32", "--attention-dim", "32", "--embedding-dim", "16",
        "--hidden", "64", "--batch-size", "32", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def one_shape_model(tmp_path_factory):
    """A tiny captioner trained for 300 steps on one-shape scenes (48×48, a 12×12 grid)."""
    out = tmp_path_factory.mktemp("caption") / "model"
    code = main(["caption", "train", "--data", "scenes", "--objects", "1", "1", "--image-size", "48",
                 "--scenes-train", "3000", "--scenes-test", "200", "--out", str(out), "--max-steps", "300",
                 "--eval-every", "100", "--lr", "5e-3", "--warmup-steps", "30", *TINY])
    assert code == 0
    return out


@pytest.mark.slow
def test_a_tiny_one_shape_task_is_learned(one_shape_model, capsys):
    assert main(["caption", "evaluate", "--model", str(one_shape_model), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 200
    assert result["exact_match"] >= 0.9, result  # "a small red circle": size, colour and shape all right
    assert result["bleu4"] >= 90
    assert result["localization"] > 4 * result["localization_uniform"], result


@pytest.mark.slow
def test_describe_writes_attention_panels_and_json(one_shape_model, tmp_path, capsys):
    image = Image.new("RGBA", (100, 80), (255, 255, 255, 255))
    image.paste((255, 0, 0, 255), (30, 20, 60, 50))
    image.save(tmp_path / "red.png")
    out = tmp_path / "att.png"
    code = main(["caption", "describe", "--model", str(one_shape_model), str(tmp_path / "red.png"),
                 "--show-attention", str(out), "--json", "--beam-size", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert "resized" in captured.err and "RGBA" in captured.err  # converted with a note
    record = json.loads(captured.out.strip())
    assert record["words"][-1] == "</s>" and len(record["attention"]) == len(record["words"])
    grid = np.array(record["attention"])
    assert grid.shape[1:] == (12, 12)
    assert np.allclose(grid.sum((1, 2)), 1, atol=1e-4)
    assert out.exists() and out.stat().st_size > 5_000


@pytest.mark.slow
def test_describe_a_folder_and_refuse_a_corrupt_image(one_shape_model, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, colour in (("a.png", (0, 0, 255)), ("b.jpg", (0, 200, 0))):
        canvas = Image.new("RGB", (48, 48), "white")
        canvas.paste(colour, (10, 10, 30, 30))
        canvas.save(folder / name)
    assert main(["caption", "describe", "--model", str(one_shape_model), str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0].rsplit("/", 1)[-1] for line in lines] == ["a.png", "b.jpg"]
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    assert main(["caption", "describe", "--model", str(one_shape_model), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "notes.png" in err and "not a readable image" in err and "Traceback" not in err


@pytest.mark.slow
def test_python_api_returns_weights(one_shape_model):
    captioner = ImageCaptioner.from_pretrained(one_shape_model)
    image = np.full((48, 48, 3), 255, dtype=np.uint8)
    image[10:30, 10:30] = (255, 0, 0)
    [caption] = captioner.describe([image], return_attention=True)
    assert caption.attention.shape == (len(caption.words), 12, 12)
    assert caption.text.startswith("a ")


def test_box_mass_spreads_each_cell_over_its_pixels():
    uniform = torch.full((4, 4), 1 / 16)
    assert box_mass(uniform, (0, 0, 32, 32), 64) == pytest.approx(0.25)
    assert box_mass(uniform, (0, 0, 8, 16), 64) == pytest.approx(8 * 16 / 64**2)
    peak = torch.zeros(4, 4)
    peak[1, 2] = 1.0  # the cell covering x 32..48, y 16..32
    assert box_mass(peak, (32, 16, 48, 32), 64) == pytest.approx(1.0)
    assert box_mass(peak, (40, 16, 48, 32), 64) == pytest.approx(0.5)
    assert box_mass(peak, (0, 0, 32, 64), 64) == 0.0


def test_localization_follows_the_noun_and_counts_a_missed_object_as_zero():
    objects = [SceneObject("circle", "red", "small", (0, 0, 16, 16)), SceneObject("square", "blue", "large", (32, 32, 64, 64))]
    example = CaptionExample(np.zeros((64, 64, 3), np.uint8), ["a small red circle left of a large blue square"], objects)
    words = "a small red circle left of a large blue square </s>".split()
    attention = torch.zeros(len(words), 4, 4)
    attention[:, 0, 0] = 1.0  # every step looks at the top-left cell: the circle's box
    full = localization([Caption("s", " ".join(words[:-1]), 0.0, words, attention)], [example], 64)
    assert full["localization"] == pytest.approx(0.5)  # circle 1.0, square 0.0
    assert full["localization_uniform"] == pytest.approx((16 * 16 + 32 * 32) / 64**2 / 2, abs=1e-4)
    missed = "a small red circle </s>".split()
    result = localization([Caption("s", "", 0.0, missed, attention[: len(missed)])], [example], 64)
    assert result["localization"] == pytest.approx(0.5) and result["localization_objects"] == 2


def test_scores_use_every_reference():
    hypotheses = ["a small red circle left of a square", "a brown dog runs on the grass"]
    references = [["a large blue square", "a small red circle left of a square"], ["a brown dog runs on grass"]]
    result = score_captions(hypotheses, references)
    assert result["exact_match"] == 0.5 and result["n"] == 2 and 40 < result["bleu4"] < 100
    first_only = score_captions(hypotheses, [refs[:1] for refs in references])
    assert first_only["bleu4"] < result["bleu4"] and first_only["exact_match"] == 0
