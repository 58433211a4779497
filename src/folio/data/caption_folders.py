"""A user's folder of images with captions: COCO captions JSON or a Karpathy-style `dataset_flickr8k.json`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from folio.data.images import CaptionExample, Note, load_image
from folio.data.splits import USER_FRACTIONS, split_by_group
from folio.errors import DataError

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
