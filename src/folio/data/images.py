"""Images with reference captions for the caption task: where they come from and how they are read.

Sources of `CaptionExample`s:

* `scene_splits` / `scene_examples` / `generate_scene`: synthetic scenes generated in code. A white canvas
  with 2-4 coloured circles, squares and triangles, small or large, that never touch, and one caption
  that names them left to right with the relation between neighbours: "a small red circle left of a
  large blue square above a small green triangle". Each object keeps its exact pixel box, so attention
  maps can be scored against where the object really is.
* `easy_vqa_splits`: the 5,000 one-shape images of the `easy-vqa` package, captioned "a blue rectangle"
  from the answers to its questions.
* `read_caption_folder`: a user's folder of images with COCO captions JSON or a Karpathy-style
  `dataset_flickr8k.json`.

`load_image` turns any image file into a square (size, size, 3) uint8 RGB array.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from folio.data.splits import USER_FRACTIONS, split_by_group
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
        with Image.open(opener) as opened:  # lazy: only the header is read yet
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
    except Image.DecompressionBombError as err:  # Pillow's own limit (Image.MAX_IMAGE_PIXELS), checked on open
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


# ---- synthetic scenes ------------------------------------------------------------------------------
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


# ---- easy-vqa --------------------------------------------------------------------------------------
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


# ---- user folders ----------------------------------------------------------------------------------
COCO_KEYS = "'images' (each with 'id' and 'file_name') and 'annotations' (each with 'image_id' and 'caption')"
KARPATHY_KEYS = "'images' (each with 'filename', 'sentences' of 'raw' or 'tokens', and 'split')"
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "valid", "valid": "valid", "test": "test"}


def normalise_caption(text: str) -> str:
    """Lower-case; punctuation other than apostrophes becomes a space; whitespace collapsed.

    >>> normalise_caption("A dog's  ball, on the GRASS.")
    "a dog's ball on the grass"
    """
    return " ".join(re.sub(r"[^\w\s']|_", " ", text.lower()).split())


def read_caption_folder(path: str | Path, size: int, note: Note | None = None, fractions: Sequence[float] = USER_FRACTIONS,
                        seed: int = 0) -> dict[str, list[CaptionExample]]:
    """Images and captions from a folder with a COCO captions JSON or a Karpathy-style split JSON.

    COCO (`captions.json` or any *.json with 'images' and 'annotations'): every caption of an image is a
    reference; images are split train/valid/test by `fractions` (80/10/10, as every task splits a user's
    file: `folio.data.splits`) with `seed`. Karpathy (`dataset_flickr8k.json`):
    its split field is kept (restval → train, val → valid). Image files are looked up relative to the
    folder, then to folder/images; each is loaded with `load_image(file, size, note)`.

    >>> read_caption_folder("my_photos", 224)["valid"][0].captions    # doctest: +SKIP
    ['a dog runs on the beach', 'a brown dog running by the sea']
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"caption folder {folder} does not exist" if not folder.exists()
                        else f"{folder} is not a folder; give the folder that holds the images and the captions JSON")
    file, data = _caption_file(folder)
    if _looks_coco(data):
        entries, fixed_splits = _coco_entries(file, data), None
    elif _looks_karpathy(data):
        entries, fixed_splits = _karpathy_entries(file, data)
    else:  # _caption_file only returns a file of one of the two formats
        raise DataError(f"{file} is neither COCO nor Karpathy captions")
    examples = []
    for image_file, captions in entries:
        image_path = _find_image(folder, file, image_file)
        examples.append(CaptionExample(load_image(image_path, size, note), captions, name=str(image_path)))
    if not examples:
        raise DataError(f"{file} lists no image with a caption")
    if fixed_splits is None:
        indices = split_by_group([e.name for e in examples], fractions, seed)
    else:
        indices = {"train": [], "valid": [], "test": []}
        for index, split in enumerate(fixed_splits):
            indices[split].append(index)
    return {split: [examples[i] for i in indices[split]] for split in ("train", "valid", "test")}


def _looks_coco(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)


def _looks_karpathy(data) -> bool:
    images = data.get("images") if isinstance(data, dict) else None
    return isinstance(images, list) and bool(images) and isinstance(images[0], dict) and "sentences" in images[0]


def _caption_file(folder: Path) -> tuple[Path, object]:
    """The one captions JSON of the folder (captions.json first) and its parsed content."""
    preferred = folder / "captions.json"
    candidates = [preferred] if preferred.is_file() else sorted(p for p in folder.glob("*.json") if p.is_file())
    if not candidates:
        raise DataError(f"{folder} holds no captions JSON: add captions.json (COCO: {COCO_KEYS}) or a "
                        f"Karpathy-style dataset_flickr8k.json ({KARPATHY_KEYS})")
    found, other = [], None
    for candidate in candidates:
        try:
            data = json.loads(candidate.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is allowed
        except UnicodeDecodeError as err:
            raise DataError(f"{candidate} is not UTF-8 text: {err}") from err
        except json.JSONDecodeError as err:
            raise DataError(f"{candidate}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})") from err
        if _looks_coco(data) or _looks_karpathy(data):
            found.append((candidate, data))
        else:
            other = data
    if not found:
        keys = ""
        if len(candidates) == 1:
            keys = f" (top-level keys: {sorted(other)[:10]})" if isinstance(other, dict) else f" (it holds a JSON {type(other).__name__})"
        names = ", ".join(p.name for p in candidates)
        raise DataError(f"{folder}: {names} is neither COCO nor Karpathy-style captions{keys}. Expected COCO "
                        f"{COCO_KEYS}, or Karpathy {KARPATHY_KEYS}")
    if len(found) > 1:
        raise DataError(f"{folder} holds several caption files ({', '.join(p.name for p, _ in found)}); "
                        "keep one, or name the one to use captions.json")
    return found[0]


def _field(file: Path, where: str, entry, key: str, kinds: type | tuple[type, ...]):
    if not isinstance(entry, dict) or key not in entry:
        raise DataError(f"{file}, {where}: missing the {key!r} field")
    value = entry[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise DataError(f"{file}, {where}, {key!r}: unexpected value {value!r}")
    return value


def _coco_entries(file: Path, data: dict) -> list[tuple[str, list[str]]]:
    names: dict[object, str] = {}
    for number, image in enumerate(data["images"]):
        image_id = _field(file, f"images[{number}]", image, "id", (int, str))
        if image_id in names:
            raise DataError(f"{file}, images[{number}]: image id {image_id!r} is listed twice")
        names[image_id] = _field(file, f"images[{number}]", image, "file_name", str)
    captions: dict[object, list[str]] = {image_id: [] for image_id in names}
    for number, annotation in enumerate(data["annotations"]):
        image_id = _field(file, f"annotations[{number}]", annotation, "image_id", (int, str))
        text = _field(file, f"annotations[{number}]", annotation, "caption", str)
        if image_id not in captions:
            raise DataError(f"{file}, annotations[{number}]: image_id {image_id!r} is not in 'images'; "
                            "add the image or remove the annotation")
        if caption := normalise_caption(text):
            captions[image_id].append(caption)
    order = sorted(names, key=lambda i: (isinstance(i, str), i))  # numeric ids first, each kind in order
    return [(names[i], captions[i]) for i in order if captions[i]]


def _karpathy_entries(file: Path, data: dict) -> tuple[list[tuple[str, list[str]]], list[str]]:
    entries, splits = [], []
    for number, image in enumerate(data["images"]):
        where = f"images[{number}]"
        filename = _field(file, where, image, "filename", str)
        folder = image.get("filepath", "")
        if not isinstance(folder, str):
            raise DataError(f"{file}, {where}, 'filepath': unexpected value {folder!r}")
        split = _field(file, where, image, "split", str)
        if split not in KARPATHY_SPLITS:
            raise DataError(f"{file}, {where} ({filename}): split {split!r}; use train, restval, val or test")
        captions = []
        for index, sentence in enumerate(_field(file, where, image, "sentences", list)):
            if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
                text = sentence["raw"]
            elif isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
                text = " ".join(str(token) for token in sentence["tokens"])
            else:
                raise DataError(f"{file}, {where}, sentences[{index}]: expected {{'raw': text}} or {{'tokens': [...]}}")
            if caption := normalise_caption(text):
                captions.append(caption)
        if captions:
            entries.append((f"{folder}/{filename}" if folder else filename, captions))
            splits.append(KARPATHY_SPLITS[split])
    return entries, splits


def _find_image(folder: Path, file: Path, name: str) -> Path:
    base = Path(name).name  # a Karpathy 'filepath' folder the user did not keep
    for candidate in (folder / name, folder / "images" / name, folder / base, folder / "images" / base):
        if candidate.is_file():
            return candidate
    raise DataError(f"{file} lists image {name!r}, but neither {folder / name} nor {folder / 'images' / name} exists")
