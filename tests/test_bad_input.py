"""A sweep of bad input over every verb of the CLI (issue 15, item 3).

Each case runs `folio ...` as a process of its own (forked from one that imported Folio once,
`tests.helpers.ForkServer`: the same `folio.cli.main`, without paying the import 200 times) and must end with exit status != 0, exactly one line on
stderr that names the problem (no traceback), and nothing written: the case's own folder (which may hold an
existing `--out` directory or file) and the shared inputs are the same afterwards, file by file (names,
sizes, mtimes and SHA-256).

The tests beside each task (tests/tasks/test_*_cli.py) already check some bad inputs one by one; this sweep
takes the categories of the issue across every verb: missing, empty, binary, non-UTF-8 and directory-for-file
inputs; CSV/JSONL files with missing columns, bad labels and a broken line; model directories that are
missing, empty, of another task, with a truncated `model.safetensors` or a garbage `config.json`; options out
of range. Flags the parser itself refuses are checked in-process (fast); everything else in its own process,
the cases run a few at a time (one pool for the module), after ONE tiny model per task is trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import PATTERN, ForkServer, number_pairs, synthetic_reviews

TASKS = ("lm", "classify", "translate", "caption")
WORKERS = max(2, min(4, os.cpu_count() or 2))
TIMEOUT = 180


# ---- the cases ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """`folio ARGV` must fail with one line holding every one of `needles`.

    ARGV entries name shared paths as `{placeholder}` (see `workspace`); `{out}` is the case's own
    output path, created first as a directory of sentinel files (`out="dir"`), a sentinel file
    (`out="file"`) or not at all (`out=None`, then it must still not exist afterwards).
    """

    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    stdin: bytes | None = None
    out: str | None = None
    writes: bool = False  # a run that fails part-way (it diverges): its --out may hold its metrics, not a model

    @property
    def models(self) -> set[str]:
        """The trained models the case refers to (`{lm}`, `{classify_truncated}`, ...)."""
        names = set()
        for arg in self.argv:
            for placeholder in re.findall(r"{(\w+)}", arg):
                task = placeholder.split("_")[0]
                if task in TASKS:
                    names.add(task)
        return names


def case(id: str, *argv: str, needles, stdin: bytes | None = None, out: str | None = None, writes: bool = False) -> Case:
    return Case(id, tuple(argv), tuple([needles] if isinstance(needles, str) else needles), stdin, out, writes)


# Tiny settings, so that a case the code wrongly accepts ends in seconds (and shows as a failure).
LM_TRAIN = ("lm", "train", "--corpus", "{corpus}", "--out", "{out}", "--hidden", "8", "--layers", "1", "--seq-len", "16",
            "--batch-size", "4", "--max-steps", "2", "--eval-every", "2", "--warmup-steps", "1", "--sample-temperatures")
NSP_TRAIN = (*LM_TRAIN, "--arch", "bert", "--objective", "mlm+nsp", "--tokenizer", "word", "--heads", "2")
CLASSIFY_TRAIN = ("classify", "train", "--data", "{reviews}", "--out", "{out}", "--hidden", "8", "--embedding-dim", "8",
                  "--vocab-size", "30", "--oov-buckets", "4", "--batch-size", "8", "--max-steps", "2", "--eval-every", "2",
                  "--warmup-steps", "1")
TRANSLATE_TRAIN = ("translate", "train", "--data", "{pairs}", "--out", "{out}", "--tokenizer", "word", "--hidden", "8",
                   "--embedding-dim", "8", "--batch-size", "8", "--max-steps", "2", "--eval-every", "2", "--warmup-steps", "1")
CAPTION_TRAIN = ("caption", "train", "--out", "{out}", "--image-size", "32", "--scenes-train", "64", "--scenes-test", "16",
                 "--objects", "1", "1", "--channels", "8", "--feature-dim", "8", "--hidden", "8", "--attention-dim", "8",
                 "--embedding-dim", "8", "--batch-size", "8", "--max-steps", "2", "--eval-every", "2", "--warmup-steps", "1")

# The five ways a file input can be bad, as (name, placeholder, what the message must say).
BAD_FILES = [
    ("missing", "{missing}", ("missing.txt",)),
    ("empty", "{empty}", ("empty.txt", "empty")),
    ("binary", "{binary}", ("binary.bin", "UTF-8")),
    ("latin1", "{latin1}", ("latin1.txt", "UTF-8", "line 2")),
    ("directory", "{folder}", ("folder", "directory")),
]


def _file_cases(prefix: str, build, out: str | None = None) -> list[Case]:
    """The five bad files, each given to `build(path)` (→ argv)."""
    return [case(f"{prefix}-{name}", *build(path), needles=needles, out=out) for name, path, needles in BAD_FILES]


def _model_cases(prefix: str, build, task: str, other: str, out: str | None = None) -> list[Case]:
    """Every way a model directory can be bad, given to `build(directory)` (→ argv)."""
    return [
        case(f"{prefix}-model-missing", *build("{nowhere}"), needles=("nowhere", "does not exist"), out=out),
        case(f"{prefix}-model-empty", *build("{empty_dir}"), needles=("empty_dir", "config.json"), out=out),
        case(f"{prefix}-model-is-a-file", *build("{corpus}"), needles=("corpus.txt",), out=out),
        case(f"{prefix}-model-other-task", *build(f"{{{other}}}"), needles=(f"'{other}' model", f"'{task}'"), out=out),
        case(f"{prefix}-model-truncated-weights", *build(f"{{{task}_truncated}}"),
             needles=("model.safetensors", "corrupt"), out=out),
        case(f"{prefix}-model-garbage-config", *build(f"{{{task}_config}}"), needles=("config.json", "corrupt"), out=out),
    ]


def _no_gpu(prefix: str, *argv: str, out: str | None = None) -> Case:
    return case(f"{prefix}-device-cuda-without-gpu", *argv, "--device", "cuda", needles=("--device cuda", "CUDA"), out=out)


CASES: list[Case] = [
    # ---- folio lm train ----
    *_file_cases("lm-train-corpus", lambda p: (*LM_TRAIN, "--corpus", p), out="dir"),
    case("lm-train-corpus-whitespace-only", *LM_TRAIN, "--corpus", "{blank}", needles=("blank.txt",), out="dir"),
    case("lm-train-corpus-too-short", *LM_TRAIN, "--corpus", "{tiny}", needles=("tiny.txt", "too short"), out="dir"),
    case("lm-train-unknown-arch", *LM_TRAIN, "--arch", "transformer", needles=("--arch", "transformer")),
    case("lm-train-dropout-over-one", *LM_TRAIN, "--dropout", "1.5", needles=("--dropout", "1.5")),
    case("lm-train-negative-warmup", *LM_TRAIN, "--warmup-steps", "-1", needles=("--warmup-steps", "-1")),
    case("lm-train-negative-embedding-dim", *LM_TRAIN, "--embedding-dim", "-4", needles=("--embedding-dim", "-4")),
    case("lm-train-gpt-context-below-seq-len", *LM_TRAIN, "--arch", "gpt", "--heads", "2", "--context", "8",
         needles=("--context", "--seq-len")),
    case("lm-train-stateful-gpt", *LM_TRAIN, "--arch", "gpt", "--heads", "2", "--stateful", needles=("--stateful",)),
    case("lm-train-softmax-samples-on-gru", *LM_TRAIN, "--softmax-samples", "64", needles=("--softmax-samples", "bilm")),
    case("lm-train-negative-softmax-samples", *LM_TRAIN, "--arch", "bilm", "--softmax-samples", "-1",
         needles=("--softmax-samples", "-1")),
    case("lm-train-char-cnn-on-characters", *LM_TRAIN, "--arch", "bilm", "--char-cnn", needles=("--char-cnn", "--tokenizer"),
         out="dir"),
    case("lm-train-resume-garbage-state", *LM_TRAIN, "--resume", "{lm_bad_state}", needles=("trainer_state.pt", "corrupt"),
         out="dir"),
    case("lm-train-resume-pickle-that-runs-code", *LM_TRAIN, "--resume", "{lm_pickle_state}",
         needles=("trainer_state.pt", "read safely"), out="dir"),
    case("lm-train-corpus-fifo", *LM_TRAIN, "--corpus", "{fifo}", needles=("fifo", "FIFO"), out="dir"),
    case("lm-train-corpus-dev-zero", *LM_TRAIN, "--corpus", "/dev/zero", needles=("/dev/zero", "device"), out="dir"),
    case("lm-train-out-is-a-file", *LM_TRAIN, needles=("--out", "is a file"), out="file"),
    case("lm-train-out-under-a-file", *LM_TRAIN, "--out", "{out}/run", needles=("--out", "nothing can be written under"),
         out="file"),
    case("lm-train-diverging-lr", *LM_TRAIN, "--lr", "1e30", "--quiet", needles=("diverged at step", "learning rate", "--lr"),
         out="dir", writes=True),
    case("lm-train-resume-other-task", *LM_TRAIN, "--resume", "{classify_last}", needles=("'classify' model", "'lm'"),
         out="dir"),
    _no_gpu("lm-train", *LM_TRAIN, out="dir"),
    case("lm-train-device-unknown", *LM_TRAIN, "--device", "tpu", needles=("--device", "tpu")),
    case("lm-train-nsp-no-sentence-boundaries", *NSP_TRAIN, "--corpus", "{no_sentences}",
         needles=("no_sentences.txt", "no document has two sentences"), out="dir"),
    case("lm-train-nsp-one-sentence-documents", *NSP_TRAIN, "--corpus", "{one_sentence}",
         needles=("one_sentence.txt", "no document has two sentences"), out="dir"),
    case("lm-train-nsp-one-document", *NSP_TRAIN, "--corpus", "{one_document}",
         needles=("one_document.txt", "only one document", "blank lines"), out="dir"),
    case("lm-train-nsp-without-bert", *LM_TRAIN, "--objective", "mlm+nsp", needles=("--objective mlm+nsp", "--arch bert")),
    case("lm-train-nsp-char-tokenizer", *NSP_TRAIN, "--tokenizer", "char", needles=("--objective mlm+nsp", "--tokenizer word")),
    # ---- folio lm sample (the temperature, the vocabulary and model directories: tests/tasks/test_lm_cli.py) ----
    case("lm-sample-model-missing", "lm", "sample", "--model", "{nowhere}", needles=("nowhere", "does not exist")),
    case("lm-sample-model-is-a-file", "lm", "sample", "--model", "{corpus}", needles=("corpus.txt",)),
    _no_gpu("lm-sample", "lm", "sample", "--model", "{lm}"),
    case("lm-sample-top-p-zero", "lm", "sample", "--model", "{lm}", "--top-p", "0", needles=("--top-p", "'0'")),
    case("lm-sample-top-p-over-one", "lm", "sample", "--model", "{lm}", "--top-p", "1.5", needles=("--top-p", "1.5")),
    case("lm-sample-nan-weights", "lm", "sample", "--model", "{lm_nan}", needles=("model.safetensors", "NaN")),
    case("lm-sample-config-larger-than-weights", "lm", "sample", "--model", "{lm_big}",
         needles=("model.safetensors", "shape", "config.json")),
    case("lm-sample-extra-tensor", "lm", "sample", "--model", "{lm_extra}", needles=("model.safetensors", "'extra'")),
    case("lm-sample-empty-prompt", "lm", "sample", "--model", "{lm}", "--prompt", "", needles=("--prompt", "empty")),
    # ---- folio lm evaluate ----
    *_file_cases("lm-evaluate-corpus", lambda p: ("lm", "evaluate", "--model", "{lm}", "--corpus", p)),
    case("lm-evaluate-corpus-fifo", "lm", "evaluate", "--model", "{lm}", "--corpus", "{fifo}", needles=("fifo", "FIFO")),
    case("lm-evaluate-unknown-characters", "lm", "evaluate", "--model", "{lm}", "--corpus", "{unknown_chars}",
         needles=("not in the vocabulary",)),
    *_model_cases("lm-evaluate", lambda m: ("lm", "evaluate", "--model", m, "--corpus", "{corpus}"), "lm", "translate"),
    _no_gpu("lm-evaluate", "lm", "evaluate", "--model", "{lm}", "--corpus", "{corpus}"),
    # ---- folio lm attention ----
    case("lm-attention-of-a-gru", "lm", "attention", "--model", "{lm}", "--text", "ROMEO", "--out", "{out}",
         needles=("--arch gpt",), out="file"),
    case("lm-attention-model-missing", "lm", "attention", "--model", "{nowhere}", "--text", "ROMEO", "--out", "{out}",
         needles=("nowhere", "does not exist"), out="file"),
    # ---- folio classify train ----
    *_file_cases("classify-train-data", lambda p: (*CLASSIFY_TRAIN, "--data", p), out="dir"),
    case("classify-train-data-fifo", *CLASSIFY_TRAIN, "--data", "{fifo}", needles=("fifo",), out="dir"),
    case("classify-train-no-text-column", *CLASSIFY_TRAIN, "--data", "{no_text_column}",
         needles=("no_text_column.csv", "'text'"), out="dir"),
    case("classify-train-no-label-field-jsonl", *CLASSIFY_TRAIN, "--data", "{no_label}",
         needles=("no_label.jsonl", "line 1", "'label'"), out="dir"),
    case("classify-train-broken-jsonl-line", *CLASSIFY_TRAIN, "--data", "{broken_jsonl}",
         needles=("broken.jsonl", "line 3", "JSON"), out="dir"),
    case("classify-train-jsonl-line-not-an-object", *CLASSIFY_TRAIN, "--data", "{array_jsonl}",
         needles=("array.jsonl", "line 2", "object"), out="dir"),
    case("classify-train-csv-nul-byte", *CLASSIFY_TRAIN, "--data", "{nul_csv}", needles=("nul.csv", "line 3"), out="dir"),
    case("classify-train-csv-empty-text", *CLASSIFY_TRAIN, "--data", "{empty_text_csv}",
         needles=("empty_text.csv", "line 3", "'text'"), out="dir"),
    case("classify-train-header-only", *CLASSIFY_TRAIN, "--data", "{header_only}", needles=("header_only.csv", "no records"),
         out="dir"),
    case("classify-train-one-label", *CLASSIFY_TRAIN, "--data", "{one_label}", needles=("one_label.csv", "two"), out="dir"),
    case("classify-train-negative-label", *CLASSIFY_TRAIN, "--data", "{negative_label}",
         needles=("negative_label.csv", "0 or more"), out="dir"),
    case("classify-train-pairs-missing-text-pair", *CLASSIFY_TRAIN, "--data", "{half_pairs}",
         needles=("half_pairs.jsonl", "line 2", "'text_pair'"), out="dir"),
    case("classify-train-pairs-for-a-gru", *CLASSIFY_TRAIN, "--data", "{pair_csv}", needles=("text_pair", "BERT encoder"),
         out="dir"),
    case("classify-train-directory-not-aclimdb", *CLASSIFY_TRAIN, "--data", "{folder}", needles=("folder", "aclImdb")),
    case("classify-train-unknown-data-name", *CLASSIFY_TRAIN, "--data", "imbd", needles=("imbd",)),
    case("classify-train-max-len-negative", *CLASSIFY_TRAIN, "--max-len", "-1", needles=("--max-len", "-1")),
    case("classify-train-dropout-negative", *CLASSIFY_TRAIN, "--dropout", "-0.5", needles=("--dropout", "-0.5")),
    case("classify-train-init-from-missing", *CLASSIFY_TRAIN, "--init-from", "{nowhere}", needles=("nowhere",)),
    case("classify-train-init-from-char-lm", *CLASSIFY_TRAIN, "--init-from", "{lm}", needles=("--init-from", "char")),
    case("classify-train-features-not-a-bilm", *CLASSIFY_TRAIN, "--features", "{lm}", needles=("gru", "not a biLM")),
    case("classify-train-features-other-task", *CLASSIFY_TRAIN, "--features", "{translate}",
         needles=("'translate'", "biLM")),
    case("classify-train-features-missing", *CLASSIFY_TRAIN, "--features", "{nowhere}", needles=("nowhere", "biLM")),
    case("classify-train-init-from-other-task", *CLASSIFY_TRAIN, "--init-from", "{translate}",
         needles=("'translate' model", "'lm'")),
    _no_gpu("classify-train", *CLASSIFY_TRAIN, out="dir"),
    # ---- folio classify predict ----
    *_file_cases("classify-predict-file", lambda p: ("classify", "predict", "--model", "{classify}", "--file", p)),
    case("classify-predict-file-broken-jsonl", "classify", "predict", "--model", "{classify}", "--file", "{broken_jsonl}",
         needles=("broken.jsonl", "line 3")),
    case("classify-predict-file-no-text-column", "classify", "predict", "--model", "{classify}", "--file",
         "{no_text_column}", needles=("no_text_column.csv", "'text'")),
    case("classify-predict-pairs-to-a-single-text-model", "classify", "predict", "--model", "{classify}", "--file",
         "{pair_csv}", needles=("single texts", "text_pair")),
    case("classify-predict-stdin-binary", "classify", "predict", "--model", "{classify}", stdin=bytes(range(256)) * 4,
         needles=("standard input", "UTF-8")),
    case("classify-predict-stdin-empty", "classify", "predict", "--model", "{classify}", stdin=b"\n\n",
         needles=("stdin", "no text")),
    *_model_cases("classify-predict", lambda m: ("classify", "predict", "--model", m, "fine film"), "classify", "lm"),
    _no_gpu("classify-predict", "classify", "predict", "--model", "{classify}", "fine film"),
    # ---- folio classify evaluate ----
    *_file_cases("classify-evaluate-data", lambda p: ("classify", "evaluate", "--model", "{classify}", "--data", p)),
    case("classify-evaluate-bad-label-csv", "classify", "evaluate", "--model", "{classify}", "--data", "{bad_label}",
         needles=("bad_label.csv", "line 3", "'meh'")),
    case("classify-evaluate-model-missing", "classify", "evaluate", "--model", "{nowhere}", "--data", "{reviews}",
         needles=("nowhere", "does not exist")),
    # ---- folio classify explain ----
    case("classify-explain-nothing-to-explain", "classify", "explain", "--model", "{classify}", "!!!", "--html", "{out}",
         needles=("'!!!'",), out="file"),
    case("classify-explain-empty-text", "classify", "explain", "--model", "{classify}", "", "--html", "{out}",
         needles=("empty",), out="file"),
    case("classify-explain-unknown-target", "classify", "explain", "--model", "{classify}", "fine", "--target", "meh",
         "--html", "{out}", needles=("--target", "'meh'"), out="file"),
    case("classify-explain-model-truncated", "classify", "explain", "--model", "{classify_truncated}", "fine",
         "--html", "{out}", needles=("model.safetensors", "corrupt"), out="file"),
    # ---- folio translate train ----
    *_file_cases("translate-train-data", lambda p: (*TRANSLATE_TRAIN, "--data", p), out="dir"),
    case("translate-train-data-fifo", *TRANSLATE_TRAIN, "--data", "{fifo}", needles=("fifo", "FIFO"), out="dir"),
    case("translate-train-out-under-a-file", *TRANSLATE_TRAIN, "--out", "{out}/run",
         needles=("--out", "nothing can be written under"), out="file"),
    case("translate-train-empty-target", *TRANSLATE_TRAIN, "--data", "{empty_target}",
         needles=("empty_target.txt", "line 2", "target")),
    case("translate-train-unknown-arch", *TRANSLATE_TRAIN, "--arch", "lstm", needles=("--arch", "lstm")),
    case("translate-train-label-smoothing-one", *TRANSLATE_TRAIN, "--label-smoothing", "1",
         needles=("--label-smoothing", "1")),
    case("translate-train-dropout-one", *TRANSLATE_TRAIN, "--dropout", "1", needles=("--dropout", "1")),
    case("translate-train-scheduled-sampling-two", *TRANSLATE_TRAIN, "--scheduled-sampling", "2",
         needles=("--scheduled-sampling", "2")),
    case("translate-train-max-src-len-negative", *TRANSLATE_TRAIN, "--max-src-len", "-3", needles=("--max-src-len", "-3")),
    case("translate-train-dates-train-zero", *TRANSLATE_TRAIN, "--data", "dates", "--dates-train", "0",
         needles=("--dates-train", "0")),
    case("translate-train-bpe-bible-version", *TRANSLATE_TRAIN, "--data", "bible", "--bible-source", "zz",
         needles=("'zz'",)),
    _no_gpu("translate-train", *TRANSLATE_TRAIN, out="dir"),
    # ---- folio translate run ----
    *_file_cases("translate-run-input", lambda p: ("translate", "run", "--model", "{translate}", "--input", p)),
    case("translate-run-stdin-binary", "translate", "run", "--model", "{translate}", stdin=bytes(range(256)) * 4,
         needles=("standard input", "UTF-8")),
    *_model_cases("translate-run", lambda m: ("translate", "run", "--model", m, "one two"), "translate", "caption"),
    _no_gpu("translate-run", "translate", "run", "--model", "{translate}", "one"),
    case("translate-run-negative-length-penalty", "translate", "run", "--model", "{translate}", "one",
         "--length-penalty", "-1", needles=("--length-penalty", "-1")),
    case("translate-run-negative-no-repeat-ngram", "translate", "run", "--model", "{translate}", "one",
         "--no-repeat-ngram-size", "-2", needles=("--no-repeat-ngram-size", "-2")),
    case("translate-run-attention-over-existing-file", "translate", "run", "--model", "{translate}", "one", "",
         "--show-attention", "{out}", needles=("argument 2 is empty",), out="file"),
    # ---- folio translate evaluate ----
    *_file_cases("translate-evaluate-data", lambda p: ("translate", "evaluate", "--model", "{translate}", "--data", p,
                                                       "--output", "{out}"), out="file"),
    case("translate-evaluate-broken-line", "translate", "evaluate", "--model", "{translate}", "--data", "{no_tab}",
         "--output", "{out}", needles=("no_tab.txt", "line 2"), out="file"),
    case("translate-evaluate-negative-limit", "translate", "evaluate", "--model", "{translate}", "--limit", "-1",
         "--output", "{out}", needles=("--limit", "-1"), out="file"),
    case("translate-evaluate-model-other-task", "translate", "evaluate", "--model", "{lm}", "--output", "{out}",
         needles=("'lm' model", "'translate'"), out="file"),
    # ---- folio caption train ----
    case("caption-train-folder-missing", *CAPTION_TRAIN, "--data", "{nowhere}", needles=("nowhere", "does not exist"),
         out="dir"),
    case("caption-train-folder-is-a-file", *CAPTION_TRAIN, "--data", "{corpus}", needles=("corpus.txt", "not a folder"),
         out="dir"),
    case("caption-train-folder-empty", *CAPTION_TRAIN, "--data", "{empty_dir}", needles=("empty_dir", "captions JSON"),
         out="dir"),
    case("caption-train-captions-not-json", *CAPTION_TRAIN, "--data", "{captions_garbage}",
         needles=("captions.json", "line 1", "JSON"), out="dir"),
    case("caption-train-captions-binary", *CAPTION_TRAIN, "--data", "{captions_binary}",
         needles=("captions.json", "UTF-8"), out="dir"),
    case("caption-train-captions-wrong-keys", *CAPTION_TRAIN, "--data", "{captions_wrong}",
         needles=("captions.json", "COCO"), out="dir"),
    case("caption-train-captions-missing-image", *CAPTION_TRAIN, "--data", "{captions_no_image}",
         needles=("nope.png",), out="dir"),
    case("caption-train-captions-missing-field", *CAPTION_TRAIN, "--data", "{captions_no_field}",
         needles=("captions.json", "'caption'"), out="dir"),
    case("caption-train-image-size-too-small", *CAPTION_TRAIN, "--image-size", "8", needles=("8",)),
    case("caption-train-objects-reversed", *CAPTION_TRAIN, "--objects", "3", "1", needles=("3", "1")),
    case("caption-train-unknown-encoder", *CAPTION_TRAIN, "--encoder", "resnet", needles=("--encoder", "resnet")),
    case("caption-train-dropout-over-one", *CAPTION_TRAIN, "--dropout", "1.2", needles=("--dropout", "1.2")),
    _no_gpu("caption-train", *CAPTION_TRAIN, out="dir"),
    # ---- folio caption describe ----
    case("caption-describe-image-missing", "caption", "describe", "--model", "{caption}", "{missing_png}",
         needles=("missing.png", "no such file")),
    case("caption-describe-image-empty", "caption", "describe", "--model", "{caption}", "{empty_png}",
         needles=("empty.png", "empty")),
    case("caption-describe-image-binary", "caption", "describe", "--model", "{caption}", "{binary_png}",
         needles=("binary.png", "not a readable image")),
    case("caption-describe-image-truncated", "caption", "describe", "--model", "{caption}", "{truncated_png}",
         needles=("truncated.png", "not a readable image")),
    case("caption-describe-folder-without-images", "caption", "describe", "--model", "{caption}", "{folder}",
         needles=("folder", "no image files")),
    case("caption-describe-attention-over-existing-file", "caption", "describe", "--model", "{caption}", "{binary_png}",
         "--show-attention", "{out}", needles=("binary.png",), out="file"),
    *_model_cases("caption-describe", lambda m: ("caption", "describe", "--model", m, "{good_png}"), "caption", "classify"),
    _no_gpu("caption-describe", "caption", "describe", "--model", "{caption}", "{good_png}"),
    # ---- folio caption evaluate ----
    case("caption-evaluate-folder-missing", "caption", "evaluate", "--model", "{caption}", "--data", "{nowhere}",
         "--output", "{out}", needles=("nowhere", "does not exist"), out="file"),
    case("caption-evaluate-negative-limit", "caption", "evaluate", "--model", "{caption}", "--limit", "-1",
         "--output", "{out}", needles=("--limit", "-1"), out="file"),
    case("caption-evaluate-model-other-task", "caption", "evaluate", "--model", "{translate}", "--output", "{out}",
         needles=("'translate' model", "'caption'"), out="file"),
    # ---- folio embed ----
    case("embed-model-missing", "embed", "--model", "{nowhere}", "hello", needles=("nowhere",)),
    case("embed-model-empty", "embed", "--model", "{empty_dir}", "hello", needles=("empty_dir",)),
    case("embed-model-other-task", "embed", "--model", "{lm}", "hello", needles=("lm",)),
    case("embed-model-garbage-config", "embed", "--model", "{lm_config}", "hello", needles=("config.json",)),
    case("embed-stdin-binary", "embed", stdin=bytes(range(256)) * 4, needles=("UTF-8",)),
    case("embed-stdin-empty", "embed", stdin=b"\n \n", needles=("no text",)),
    # ---- folio serve (it must refuse before it listens: a case that starts serving times out) ----
    case("serve-model-missing", "serve", "--model", "{nowhere}", needles=("nowhere",)),
    case("serve-model-empty", "serve", "--model", "{empty_dir}", needles=("empty_dir", "config.json")),
    case("serve-model-truncated-weights", "serve", "--model", "{lm_truncated}", needles=("model.safetensors", "corrupt")),
    case("serve-model-garbage-config", "serve", "--model", "{translate_config}", needles=("config.json",)),
    case("serve-model-is-a-file", "serve", "--model", "{corpus}", needles=("corpus.txt",)),
    case("serve-duplicate-names", "serve", "--model", "a={lm}", "--model", "a={classify}", needles=("'a'",)),
    # ---- folio export ----
    case("export-model-missing", "export", "--model", "{nowhere}", needles=("nowhere",)),
    case("export-model-empty", "export", "--model", "{empty_dir}", needles=("empty_dir", "config.json")),
    case("export-model-truncated-weights", "export", "--model", "{classify_truncated}", "--out", "{out}",
         needles=("model.safetensors", "corrupt"), out="file"),
    case("export-model-garbage-config", "export", "--model", "{lm_config}", "--out", "{out}", needles=("config.json",),
         out="file"),
    case("export-out-under-a-file", "export", "--model", "{classify}", "--out", "{out}/model.onnx",
         needles=("--out", "nothing can be written under"), out="file"),
    case("export-task-without-export", "export", "--model", "{caption}", "--out", "{out}", needles=("'caption'",),
         out="file"),
    case("export-quantize-torchscript", "export", "--model", "{lm}", "--format", "torchscript", "--quantize",
         "--out", "{out}", needles=("--quantize",), out="file"),
]


# ---- the inputs ----------------------------------------------------------------------------------------
def _png(path: Path, size: int = 32) -> None:
    from PIL import Image

    image = Image.new("RGB", (size, size), "white")
    image.paste((255, 0, 0), (8, 8, 24, 24))
    image.save(path)


def _write_inputs(data: Path) -> dict[str, str]:
    """Every bad (and the few good) input files; returns placeholder → path."""
    data.mkdir()
    files = {
        "corpus": ("corpus.txt", (PATTERN * 60).encode()),
        "tiny": ("tiny.txt", b"ab"),
        "empty": ("empty.txt", b""),
        "blank": ("blank.txt", b"\n  \n\t\n"),
        "binary": ("binary.bin", bytes(range(256)) * 8),
        "latin1": ("latin1.txt", "ROMEO:\nCaf\xe9 au lait\n".encode("latin-1")),
        "unknown_chars": ("unknown_chars.txt", (PATTERN * 60 + "Zebra\u00a7\n").encode()),
        "reviews": ("reviews.csv", ("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in synthetic_reviews(80, 3))).encode()),
        "no_text_column": ("no_text_column.csv", b"review,label\nnice,pos\nbad,neg\n"),
        "no_label": ("no_label.jsonl", b'{"text": "a fine film"}\n'),
        "broken_jsonl": ("broken.jsonl", b'{"text": "great", "label": "pos"}\n{"text": "dull", "label": "neg"}\n'
                                         b'{"text": "fine", "label": \n'),
        "array_jsonl": ("array.jsonl", b'{"text": "great", "label": "pos"}\n["dull", "neg"]\n'),
        "nul_csv": ("nul.csv", b"text,label\ngreat,pos\ndu\x00ll,neg\n"),
        "empty_text_csv": ("empty_text.csv", b'text,label\ngreat,pos\n"",neg\n'),
        "header_only": ("header_only.csv", b"text,label\n"),
        "one_label": ("one_label.csv", b"text,label\ngreat,pos\nsuperb,pos\n"),
        "negative_label": ("negative_label.csv", b"text,label\ngreat,1\ndull,-1\n"),
        "bad_label": ("bad_label.csv", b"text,label\ngreat,pos\nso so,meh\n"),
        "pairs": ("pairs.txt", number_pairs(200, 0).encode()),
        "no_sentences": ("no_sentences.txt", ("the film was long and the plot was thin " * 300).encode()),
        "one_sentence": ("one_sentence.txt", "".join(f"The film number {i} was fine.\n\n" for i in range(80)).encode()),
        "one_document": ("one_document.txt", ("The film was fine. The plot was thin.\n" * 80).encode()),
        "half_pairs": ("half_pairs.jsonl", b'{"text": "It rains.", "text_pair": "Take a coat.", "label": "next"}\n'
                                           b'{"text": "It rains.", "label": "random"}\n'),
        "pair_csv": ("pair.csv", ("text,text_pair,label\n" + "".join(f"It rains {i}.,Take a coat.,{'next' if i % 2 else 'random'}\n"
                                                                     for i in range(40))).encode()),
        "empty_target": ("empty_target.txt", b"one\tun\ntwo\t\n"),
        "no_tab": ("no_tab.txt", b"one\tun\ntwo deux\n"),
        "empty_png": ("empty.png", b""),
        "binary_png": ("binary.png", bytes(range(256)) * 8),
    }
    paths = {"missing": str(data / "missing.txt"), "missing_png": str(data / "missing.png"),
             "nowhere": str(data / "nowhere"), "folder": str(data / "folder"), "empty_dir": str(data / "empty_dir")}
    for key, (name, content) in files.items():
        (data / name).write_bytes(content)
        paths[key] = str(data / name)
    (data / "folder").mkdir()
    (data / "folder" / "notes.md").write_text("not an image, not a corpus\n")
    (data / "empty_dir").mkdir()
    os.mkfifo(data / "fifo")  # a read would block for ever: refused before anything opens it
    paths["fifo"] = str(data / "fifo")
    _png(data / "good.png")
    paths["good_png"] = str(data / "good.png")
    whole = (data / "good.png").read_bytes()
    (data / "truncated.png").write_bytes(whole[: len(whole) // 2])
    paths["truncated_png"] = str(data / "truncated.png")
    coco = {"images": [{"id": 1, "file_name": "good.png"}], "annotations": [{"image_id": 1, "caption": "a red square"}]}
    folders = {
        "captions_garbage": b"{not json",
        "captions_binary": bytes(range(256)) * 2,
        "captions_wrong": json.dumps({"pictures": []}).encode(),
        "captions_no_image": json.dumps({**coco, "images": [{"id": 1, "file_name": "nope.png"}]}).encode(),
        "captions_no_field": json.dumps({**coco, "annotations": [{"image_id": 1, "text": "a red square"}]}).encode(),
    }
    for key, content in folders.items():
        (data / key).mkdir()
        (data / key / "captions.json").write_bytes(content)
        _png(data / key / "good.png")
        paths[key] = str(data / key)
    return paths


def _train_models(root: Path) -> dict[str, str]:
    """One tiny model per task (a few steps: only their files matter), and the broken copies of each."""
    from folio.tasks.caption import CaptionTrainOptions
    from folio.tasks.caption import DataSpec as CaptionData
    from folio.tasks.caption import train as train_captioner
    from folio.tasks.classify import ClassifyTrainOptions
    from folio.tasks.classify import train as train_classifier
    from folio.tasks.lm import LMTrainOptions
    from folio.tasks.lm import train as train_lm
    from folio.tasks.translate import DataSpec, TranslateTrainOptions
    from folio.tasks.translate import train as train_translator
    from folio.training.config import TrainConfig

    steps = TrainConfig(lr=1e-2, max_steps=2, warmup_steps=1, eval_every=2, save_every=2, log_every=2)
    common = {"train": steps, "device": "cpu", "progress": False}
    root.mkdir()
    corpus = root / "corpus.txt"
    corpus.write_text(PATTERN * 60)
    train_lm(LMTrainOptions(corpus=str(corpus), out=str(root / "lm"), model={"hidden": 8, "layers": 1}, seq_len=16,
                            batch_size=4, **common))
    reviews = root / "reviews.jsonl"
    reviews.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(80, 0)))
    train_classifier(ClassifyTrainOptions(data=str(reviews), out=str(root / "classify"), vocab_size=30, oov_buckets=4,
                                          model={"hidden": 8, "embedding_dim": 8, "dropout": 0.0}, batch_size=8, **common))
    pairs = root / "numbers.txt"
    pairs.write_text(number_pairs(200, 0), encoding="utf-8")
    train_translator(TranslateTrainOptions(data=DataSpec(data=str(pairs)), out=str(root / "translate"), tokenizer="word",
                                           model={"hidden": 8, "embedding_dim": 8, "dropout": 0.0}, batch_size=8, **common))
    train_captioner(CaptionTrainOptions(data=CaptionData(image_size=32, scenes_train=64, scenes_valid=16, scenes_test=16,
                                                         scenes_objects=(1, 1)),
                                        out=str(root / "caption"), model={"channels": (8,), "hidden": 8, "feature_dim": 8,
                                                                          "attention_dim": 8, "embedding_dim": 8},
                                        batch_size=8, **common))
    paths = {}
    for task in TASKS:
        model = root / task
        paths[task] = str(model)
        paths[f"{task}_last"] = str(model / "last")
        truncated = root / f"{task}_truncated"
        shutil.copytree(model, truncated, ignore=shutil.ignore_patterns("last"))
        weights = (truncated / "model.safetensors").read_bytes()
        (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
        paths[f"{task}_truncated"] = str(truncated)
        garbage = root / f"{task}_config"
        shutil.copytree(model, garbage, ignore=shutil.ignore_patterns("last"))
        (garbage / "config.json").write_bytes(b'\x00\xff{"task": ')
        paths[f"{task}_config"] = str(garbage)
    bad_state = root / "lm_bad_state"
    shutil.copytree(root / "lm" / "last", bad_state)
    (bad_state / "trainer_state.pt").write_bytes(b"not a torch file")
    paths["lm_bad_state"] = str(bad_state)
    pickle_state = root / "lm_pickle_state"
    shutil.copytree(root / "lm" / "last", pickle_state)
    state = torch.load(pickle_state / "trainer_state.pt", weights_only=True)
    torch.save({**state, "step": _Exploit(root / "marker")}, pickle_state / "trainer_state.pt")  # the sweep checks models/
    paths["lm_pickle_state"] = str(pickle_state)
    for name, change in (("nan", lambda w, c: w[next(iter(w))].fill_(float("nan"))),
                         ("big", lambda w, c: c["model"].update(hidden=c["model"]["hidden"] * 1000)),
                         ("extra", lambda w, c: w.update(extra=torch.zeros(3)))):
        broken = root / f"lm_{name}"
        shutil.copytree(root / "lm", broken, ignore=shutil.ignore_patterns("last"))
        weights = load_file(str(broken / "model.safetensors"))
        config = json.loads((broken / "config.json").read_text())
        change(weights, config)
        save_file(weights, str(broken / "model.safetensors"))
        (broken / "config.json").write_text(json.dumps(config))
        paths[f"lm_{name}"] = str(broken)
    return paths


class _Exploit:
    """Unpickled, it would write `marker`: what a crafted trainer_state.pt could do on --resume."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under `root`: (size, mtime in ns, SHA-256) of files, "dir" for folders."""
    seen = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            seen[str(path.relative_to(root))] = ("dir",)
        elif not path.is_file():  # the FIFO: reading it would block
            seen[str(path.relative_to(root))] = ("special", path.stat().st_mtime_ns)
        else:
            stat = path.stat()
            seen[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return seen


# ---- running the cases -----------------------------------------------------------------------------
@dataclass
class Outcome:
    returncode: int | None  # None: still running after TIMEOUT seconds (killed)
    stdout: str
    stderr: str
    changed: list[str] = field(default_factory=list)  # what the run wrote in its own folder


def _run(case: Case, paths: dict[str, str], root: Path, servers: queue.Queue) -> Outcome:
    folder = root / "cases" / case.id
    folder.mkdir(parents=True)
    out = folder / "out"
    if case.out == "dir":
        out.mkdir()
        (out / "config.json").write_text('{"sentinel": true}\n')
        (out / "model.safetensors").write_bytes(b"sentinel weights")
        (out / "last").mkdir()
    elif case.out == "file":
        out.write_bytes(b"sentinel")
    argv = [arg.format_map({**paths, "out": str(out)}) for arg in case.argv]
    env = {"FOLIO_CACHE": str(root / "cache"), "CUDA_VISIBLE_DEVICES": ""}  # "--device cuda" must find no GPU
    before = snapshot(folder)
    server = servers.get()  # a process of its own per case, forked from one that imported Folio once
    try:
        returncode, stdout, stderr = server.run(argv, folder, case.stdin or b"", env, TIMEOUT)
    finally:
        servers.put(server)
    after = snapshot(folder)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    return Outcome(returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"), changed)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The shared inputs: bad files under data/ (always) and tiny trained models (when a case needs them)."""
    root = tmp_path_factory.mktemp("bad_input")
    return root, _write_inputs(root / "data")


@pytest.fixture(scope="module")
def outcomes(request, workspace):
    """Every selected case, run a few at a time; the shared inputs' snapshots before and after."""
    root, paths = workspace
    wanted = [item.callspec.params["bad"] for item in request.session.items
              if item.module is request.module and "bad" in getattr(getattr(item, "callspec", None), "params", {})]
    if any(c.models for c in wanted):
        paths = {**paths, **_train_models(root / "models")}
    shared = {name: snapshot(root / name) for name in ("data", "models") if (root / name).exists()}
    servers = queue.Queue()
    for _ in range(WORKERS):
        servers.put(ForkServer())
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            results = dict(zip([c.id for c in wanted], pool.map(lambda c: _run(c, paths, root, servers), wanted),
                               strict=True))
    finally:
        while not servers.empty():
            servers.get().close()
    return results, shared, root


def _params():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return [pytest.param(c, id=c.id, marks=pytest.mark.slow) for c in CASES]


@pytest.mark.parametrize("bad", _params())
def test_bad_input_fails_with_one_line_and_writes_nothing(bad: Case, outcomes):
    outcome = outcomes[0][bad.id]
    assert outcome.returncode is not None, f"still running after {TIMEOUT} s: it accepted the input\n{outcome.stderr}"
    assert outcome.returncode != 0, f"exit 0: it accepted the input\nstdout: {outcome.stdout[-500:]}\nstderr: {outcome.stderr}"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{len(lines)} lines on stderr, not one:\n{outcome.stderr}"
    missing = [needle for needle in bad.needles if needle not in lines[0]]
    assert not missing, f"the message does not say {missing}: {lines[0]}"
    if bad.writes:  # its metrics, but no model (the sentinel one stays)
        assert not [name for name in outcome.changed if name.endswith((".safetensors", ".json"))], outcome.changed
    else:
        assert not outcome.changed, f"wrote {outcome.changed}"


@pytest.mark.slow
def test_the_shared_inputs_are_untouched(outcomes):
    _, shared, root = outcomes
    for name, before in shared.items():
        after = snapshot(root / name)
        changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
        assert not changed, f"the sweep wrote in {name}/: {changed}"


# ---- flags the parser refuses (in-process: argparse's exit is the same in a subprocess) ----------------
PARSER_CASES = [
    (("lm", "train", "--max-steps", "0"), "--max-steps"),
    (("lm", "train", "--max-steps", "-5"), "--max-steps"),
    (("lm", "train", "--batch-size", "0"), "--batch-size"),
    (("lm", "train", "--seq-len", "-1"), "--seq-len"),
    (("lm", "train", "--arch", "rnn"), "--arch"),
    (("lm", "train", "--lr", "0"), "--lr"),
    (("lm", "train", "--lr", "nan"), "--lr"),
    (("lm", "train", "--lr", "1e999"), "--lr"),
    (("lm", "train", "--seed", str(2**64)), "--seed"),
    (("lm", "train", "--seed", "-1"), "--seed"),
    (("lm", "train", "--weight-decay", "inf"), "--weight-decay"),
    (("lm", "train", "--grad-clip", "nan"), "--grad-clip"),
    (("lm", "train", "--ema-decay", "nan"), "--ema-decay"),
    (("lm", "train", "--min-lr-ratio", "-inf"), "--min-lr-ratio"),
    (("lm", "train", "--dropout", "nan"), "--dropout"),
    (("lm", "train", "--warmup-steps", str(10**30)), "--warmup-steps"),
    (("lm", "train", "--max-steps", str(2**63)), "--max-steps"),
    (("lm", "train", "--sample-prompt", "\udcff"), "--sample-prompt"),
    (("lm", "sample", "--model", "m", "--seed", str(2**70)), "--seed"),
    (("lm", "sample", "--model", "m", "--prompt", "caf\udce9"), "--prompt"),
    (("lm", "attention", "--model", "m", "--text", "\udcff"), "--text"),
    (("classify", "train", "--split-seed", str(2**64)), "--split-seed"),
    (("classify", "train", "--dropout", "inf"), "--dropout"),
    (("classify", "predict", "--model", "m", "\udcff"), "texts"),
    (("translate", "run", "--model", "m", "--length-penalty", "nan"), "--length-penalty"),
    (("translate", "run", "--model", "m", "\udcff"), "text"),
    (("translate", "train", "--label-smoothing", "nan"), "--label-smoothing"),
    (("caption", "train", "--doubly-stochastic", "inf"), "--doubly-stochastic"),
    (("embed", "\udcff"), "TEXT"),
    (("lm", "train", "--max-time", "-1"), "--max-time"),
    (("lm", "train", "--eval-every", "0"), "--eval-every"),
    (("lm", "train", "--context", "0"), "--context"),
    (("lm", "train", "--tokenizer", "sentencepiece"), "--tokenizer"),
    (("lm", "sample", "--model", "m", "--top-p", "-0.1"), "--top-p"),
    (("lm", "sample", "--model", "m", "--top-p", "nan"), "--top-p"),
    (("lm", "sample", "--model", "m", "--temperature", "inf"), "--temperature"),
    (("lm", "sample", "--model", "m", "--top-k", "0"), "--top-k"),
    (("lm", "sample", "--model", "m", "--length", "0"), "--length"),
    (("lm", "sample", "--model", "m", "--num-samples", "-1"), "--num-samples"),
    (("lm", "evaluate", "--model", "m", "--streams", "0"), "--streams"),
    (("classify", "train", "--batch-size", "-8"), "--batch-size"),
    (("classify", "train", "--arch", "cnn"), "--arch"),
    (("classify", "train", "--valid-fraction", "0"), "--valid-fraction"),
    (("classify", "train", "--labels", "pos"), "--labels"),
    (("classify", "predict", "--model", "m", "--batch-size", "0"), "--batch-size"),
    (("classify", "explain", "--model", "m", "x", "--steps", "0"), "--steps"),
    (("translate", "train", "--max-steps", "0"), "--max-steps"),
    (("translate", "train", "--hidden", "0"), "--hidden"),
    (("translate", "train", "--attention", "luong"), "--attention"),
    (("translate", "run", "--model", "m", "--beam-size", "0"), "--beam-size"),
    (("translate", "run", "--model", "m", "--n-best", "0"), "--n-best"),
    (("caption", "train", "--image-size", "0"), "--image-size"),
    (("caption", "train", "--objects", "0", "2"), "--objects"),
    (("caption", "train", "--batch-size", "0"), "--batch-size"),
    (("caption", "describe", "--model", "m", "x.png", "--beam-size", "-1"), "--beam-size"),
    (("embed", "--batch-size", "0"), "--batch-size"),
    (("serve", "--model", "m", "--port", "0"), "--port"),
    (("serve", "--model", "m", "--max-body-bytes", "-1"), "--max-body-bytes"),
    (("export", "--model", "m", "--format", "tflite"), "--format"),
]


@pytest.mark.parametrize("argv, flag", PARSER_CASES, ids=[" ".join(a) for a, _ in PARSER_CASES])
def test_out_of_range_flags_are_refused_by_the_parser(argv, flag, capsys):
    from folio.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flag in err, err
