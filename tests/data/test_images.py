"""Reading image files: conversions, resizing, refusals."""

import numpy as np
import pytest
from PIL import Image, ImageFile

from folio.data.images import load_image
from folio.errors import DataError


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
