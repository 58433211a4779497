"""Images with reference captions for the caption task: the example type every source gives, and the reader.

Sources of `CaptionExample`s, one module each:

* `folio.data.scenes`: synthetic scenes generated in code, with each object's exact pixel box.
* `folio.data.easy_vqa`: the 5,000 one-shape images of the `easy-vqa` package.
* `folio.data.caption_folders`: a user's folder of images with COCO captions JSON or a Karpathy-style
  `dataset_flickr8k.json`.

`load_image` turns any image file into a square (size, size, 3) uint8 RGB array.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from folio.errors import ConfigError, DataError

Note = Callable[[str], None]




@dataclass
class SceneObject:
    """One shape of a synthetic scene; `box` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive, tight."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass
class CaptionExample:
    """An image (H, W, 3) uint8 RGB with one or more lower-case reference captions."""

    image: np.ndarray
    captions: list[str]
    objects: list[SceneObject] = field(default_factory=list)  # synthetic scenes only: in caption order
    name: str = ""  # where it came from ("scene 17", a file path) for messages and output


# ---- reading image files ---------------------------------------------------------------------------
# The most pixels (width × height) an image sent to `folio serve` may have: 4096×4096, so a 12-megapixel photo
# passes. A PNG of a blank canvas that size is a few kilobytes, but decoding it takes 16.8M pixels of memory
# and time; `load_image(max_pixels=...)` reads the size from the file's header and refuses larger ones first.
MAX_IMAGE_PIXELS = 4096 * 4096


def load_image(source: str | Path | bytes, size: int, note: Note | None = None, name: str | None = None,
               max_pixels: int | None = None) -> np.ndarray:
    """Any image Pillow can read (a file path, or the file's bytes) → (size, size, 3) uint8 RGB.

    Transparent images are composited over white; other modes are converted to RGB; an image of another
    size is resized (bilinear, no crop, so the aspect ratio is not kept). When it converts or resizes it
    calls `note` once with what it did. `name` labels bytes in messages (a path labels itself). An image
    of more than `max_pixels` pixels is refused before it is decoded (None: Pillow's own limit).

    >>> load_image("photo.jpg", 224).shape    # doctest: +SKIP
    (224, 224, 3)
    """
    if size < 1:
        raise ConfigError(f"image size {size}: it must be a positive number of pixels")
    if isinstance(source, (bytes, bytearray)):
        where, opener = name or "the image data", io.BytesIO(source)
        if not source:
            raise DataError(f"{where} is not a readable image: it is empty")
    else:
        path = Path(source)
        where, opener = str(path), path
        if not path.is_file():
            why = ("there is no such file" if not path.exists() else "it is a folder, not a file" if path.is_dir()
                   else "it is not a regular file")
            raise DataError(f"{path} is not a readable image: {why}; check the path")
    try:
        with warnings.catch_warnings():
            # Pillow warns of an image between 1 and 2 times its pixel limit and decodes it anyway: with a limit
            # of our own (checked next) the warning says nothing more; without one it refuses, as over 2 times
            warnings.simplefilter("ignore" if max_pixels is not None else "error", Image.DecompressionBombWarning)
            opened = Image.open(opener)  # lazy: only the header is read yet
        with opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise DataError(f"{where} is {width}×{height}: {width * height:,} pixels, over the limit of "
                                f"{max_pixels:,}; send a smaller image (the model sees {size}×{size})")
            opened.load()  # decode now: a truncated file fails here, not later
            original_size, original_mode = opened.size, opened.mode
            rotated = _exif_orientation(opened) not in (None, 1)
            image, converted = _to_rgb(ImageOps.exif_transpose(opened) if rotated else opened, where)
            done = ["rotated as its EXIF orientation says"] if rotated else []
            done += [converted] if converted else []
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
                done.append(f"resized to {size}×{size} (bilinear, no crop)")
            pixels = np.array(image, dtype=np.uint8)  # while the file is open: `image` may be `opened`
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # Pillow's own limit, checked on open
        raise DataError(f"{where} has too many pixels to decode ({err}); send a smaller image") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where} is not a readable image ({err}); use a PNG, JPEG or other file Pillow can open") from err
    if done and note is not None:
        width, height = original_size
        note(f"{where}: {width}×{height} {original_mode} image {', '.join(done)}")
    return pixels


def resize_array(pixels: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to (size, size, 3) the way `load_image` resizes files."""
    if pixels.shape[:2] == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def _exif_orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block is not worth failing the image for
        return None


def _to_rgb(image: Image.Image, where: str) -> tuple[Image.Image, str]:
    """The image as RGB and a few words on the conversion ("" when it was RGB already)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image, ""
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), "composited over white"
    if mode.startswith("I") or mode == "F":
        # Pillow's own I;16 → RGB conversion clips at 255 (a 16-bit picture turns white): rescale instead.
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if mode == "F" and values.max(initial=0) <= 1.0 else 255.0 if values.max(initial=0) <= 255 else 65535.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), f"converted from {mode} to RGB"
    try:
        return image.convert("RGB"), f"converted from {mode} to RGB"
    except ValueError as err:
        raise DataError(f"{where}: cannot convert a {mode} image to RGB ({err}); save it as an RGB PNG or JPEG") from err
