"""`folio caption`: its verbs and flags."""

from __future__ import annotations

import json
from pathlib import Path

from folio.data.splits import EVALUATION_SPLITS, chosen_split
from folio.errors import DataError
from folio.flags import (
    Formatter,
    finite_float,
    non_negative_int,
    positive_int,
    seed,
)
from folio.models.options import add_model_flags, model_from_flags
from folio.render import plot_caption_attention
from folio.tasks.caption.data import CaptionData, note
from folio.tasks.caption.inference import ImageCaptioner
from folio.tasks.caption.options import CaptionTrainOptions
from folio.tasks.caption.recipe import train
from folio.training.flags import add_training_flags, train_config_from

ARCHS = ("captioner",)  # (one family: no --arch)


def _data_spec(args) -> CaptionData:
    return CaptionData(data=args.data, image_size=args.image_size, scenes_train=args.scenes_train,
                       scenes_test=args.scenes_test, scenes_objects=tuple(args.objects), split_seed=args.split_seed)


def _train(args) -> int:
    options = CaptionTrainOptions(
        data=_data_spec(args), out=args.out, model=model_from_flags(args, ARCHS, "captioner"), batch_size=args.batch_size,
        train=train_config_from(args), device=args.device, resume=args.resume, progress=not args.quiet,
    )
    train(options)
    return 0


def _evaluate(args) -> int:
    captioner = ImageCaptioner.from_pretrained(args.model, device=args.device)
    saved = captioner.config.get("data_spec", {})
    spec = CaptionData.from_dict({**saved, **({"data": args.data} if args.data else {})})
    examples = chosen_split(spec.load(only=None if args.split == "all" else args.split), args.split)
    if args.limit:
        examples = examples[: args.limit]
    result = captioner.evaluate(examples, beam_size=args.beam_size, length_penalty=args.length_penalty)
    hypotheses = result.pop("hypotheses")
    if args.output:
        Path(args.output).write_text("".join(f"{e.name}\t{h}\n" for e, h in zip(examples, hypotheses, strict=True)),
                                     encoding="utf-8")
    result = {"split": args.split, "data": spec.data, "beam_size": args.beam_size, **result}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def _describe(args) -> int:
    captioner = ImageCaptioner.from_pretrained(args.model, device=args.device)
    paths: list[Path] = []
    for item in args.images:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            paths += found
        else:
            paths.append(path)
    arrays = [captioner.load(p) for p in paths]
    captions = captioner.describe(arrays, beam_size=args.beam_size, length_penalty=args.length_penalty,
                                  return_attention=bool(args.show_attention or args.json), names=[str(p) for p in paths])
    for array, caption, path in zip(arrays, captions, paths, strict=True):
        if args.show_attention:
            target = Path(args.show_attention)
            if len(paths) > 1:
                target = target.with_name(f"{target.stem}_{path.stem}{target.suffix or '.png'}")
            plot_caption_attention(array, caption, target)
            note(f"attention for {path} written to {target}")
        if args.json:
            print(json.dumps({"image": caption.name, "caption": caption.text, "score": round(caption.score, 4),
                              "words": caption.words, "attention": caption.attention.tolist()}))
        else:
            print(f"{caption.name}\t{caption.text}")
    return 0


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _add_data_flags(parser, default: str | None) -> None:
    d = parser.add_argument_group("data")
    d.add_argument("--data", default=default, help="scenes (generated), easyvqa, or a folder with images and a "
                   "COCO-captions / Karpathy Flickr8k JSON file" + ("" if default else " (default: the model's)"))
    d.add_argument("--image-size", type=positive_int, default=64, help="images are resized to this square")
    d.add_argument("--scenes-train", type=positive_int, default=20_000, help="generated training scenes")
    d.add_argument("--scenes-test", type=positive_int, default=1_000, help="generated test scenes")
    d.add_argument("--objects", type=positive_int, nargs=2, default=[2, 4], metavar=("MIN", "MAX"),
                   help="shapes per generated scene")
    d.add_argument("--split-seed", type=seed, default=0)


def add_cli(parser) -> None:
    """`folio caption train | describe | evaluate`."""
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a captioning model", formatter_class=Formatter,
                         description="Train a CNN + soft-attention LSTM captioner (Show, Attend and Tell).")
    _add_data_flags(t, "scenes")
    t.add_argument("--out", default="runs/caption", help="model directory")
    m = t.add_argument_group("model")
    add_model_flags(m, ARCHS)
    t.add_argument("--batch-size", type=positive_int, default=64)
    add_training_flags(t, lr=2e-3, max_time=600.0)
    t.set_defaults(func=_train)

    def decoding(p) -> None:
        p.add_argument("--beam-size", type=positive_int, default=1, help="1: greedy")
        p.add_argument("--length-penalty", type=finite_float, default=0.6)
        p.add_argument("--device", default="cpu")

    d = verbs.add_parser("describe", help="caption images", formatter_class=Formatter,
                         description="Caption image files or every image in a folder.")
    d.add_argument("images", nargs="+", help="image files or folders")
    d.add_argument("--model", required=True, help="model directory")
    d.add_argument("--show-attention", default=None, metavar="PNG",
                   help="overlay the attention for each word on the image (one PNG per image: PNG_<name>.png when several)")
    d.add_argument("--json", action="store_true", help="one JSON object per image, with the attention weights")
    decoding(d)
    d.set_defaults(func=_describe)

    e = verbs.add_parser("evaluate", help="BLEU-4, exact match and localization on a split", formatter_class=Formatter)
    e.add_argument("--model", required=True)
    e.add_argument("--data", default=None, help="default: the data the model was trained on")
    e.add_argument("--split", choices=EVALUATION_SPLITS, default="test",
                   help="a COCO folder is split 80/10/10 by image with the saved seed; all: every image")
    e.add_argument("--limit", type=non_negative_int, default=0, help="evaluate only the first N images (0: all)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--output", default=None, help="write name<TAB>caption lines to this file")
    decoding(e)
    e.set_defaults(func=_evaluate)
