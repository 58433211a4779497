"""One place that says what a model is: `model.arch` → its config dataclass and its module.

Every `config.json` names its model in `model.arch` (older checkpoints used classify's `type`, translate's
top-level `model_family`, or nothing: `model_section` reads them). `build_model(section)` makes an untrained
model and `load_checkpoint(directory)` a trained one with its tokenizers; nothing else builds a model from a
config. Pretrained models that are not Folio directories (a GGUF file, "smollm2", "minilm", a Hugging Face
directory) load through the same call, by the readers in `FOREIGN`.

    >>> model = build_model({"arch": "gpt", "vocab_size": 65})                          # doctest: +SKIP
    >>> model, tokenizer, config = load_checkpoint("runs/shakespeare")                   # doctest: +SKIP

Adding a model family: its file in `models/` (a config dataclass with an `arch` field, its flags declared on its
fields by `folio.models.options.option`, and a module built from it) and one `ARCHS` line below.

The rest of this module reads checkpoint directories: each file of one is checked against the others before
anything large is allocated (`check_weights` on a model built on the meta device), and nothing read can run
code (`model.safetensors`, JSON).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from folio.errors import CheckpointError, ConfigError
from folio.tokenizers import load_tokenizer

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Family:
    """A model family: its config dataclass and module ("module:Class", imported when used), and the
    tokenizers its checkpoints hold: (file in the directory, "" for its vocab.json; the config field
    whose rows the tokenizer must fit)."""

    config: str
    model: str
    tokenizers: tuple[tuple[str, str], ...] = (("", "vocab_size"),)


_RNN_LM = Family("folio.models.rnn_lm:RNNLMConfig", "folio.models.rnn_lm:RNNLanguageModel")
ARCHS: dict[str, Family] = {
    "gru": _RNN_LM,
    "lstm": _RNN_LM,
    "gpt": Family("folio.models.gpt:GPTConfig", "folio.models.gpt:GPT"),
    "llama": Family("folio.models.llama:LlamaConfig", "folio.models.llama:Llama"),
    "bert": Family("folio.models.bert:MaskedLMConfig", "folio.models.bert:MaskedLanguageModel"),
    "bilm": Family("folio.models.bilm:BiLMConfig", "folio.models.bilm:BiLM"),
    "rnn_classifier": Family("folio.models.classifier:ClassifierConfig", "folio.models.classifier:RecurrentClassifier"),
    "transformer_classifier": Family("folio.models.classifier:TransformerClassifierConfig",
                                     "folio.models.classifier:TransformerClassifier"),
    "elmo_classifier": Family("folio.models.classifier:ELMoClassifierConfig", "folio.models.classifier:ELMoClassifier"),
    "sentence_head": Family("folio.models.sentence_encoder:SentenceHeadConfig",
                            "folio.models.sentence_encoder:SentenceHead", tokenizers=()),
    "rnn_seq2seq": Family("folio.models.seq2seq:Seq2SeqConfig", "folio.models.seq2seq:Seq2Seq",
                          tokenizers=(("src_tokenizer.json", "src_vocab_size"), ("tgt_tokenizer.json", "tgt_vocab_size"))),
    "transformer_seq2seq": Family("folio.models.transformer_seq2seq:TransformerSeq2SeqConfig",
                                  "folio.models.transformer_seq2seq:TransformerSeq2Seq",
                                  tokenizers=(("src_tokenizer.json", "src_vocab_size"),
                                              ("tgt_tokenizer.json", "tgt_vocab_size"))),
    "captioner": Family("folio.models.captioner:CaptionerConfig", "folio.models.captioner:Captioner",
                        tokenizers=(("tokenizer.json", "vocab_size"),)),
}


@dataclass(frozen=True)
class Foreign:
    """Pretrained models in another project's format: `reads(source) -> bool` says whether `load(source,
    device, **options) -> Checkpoint` reads it; `task` is the Folio task they serve."""

    task: str
    reads: str
    load: str


FOREIGN: tuple[Foreign, ...] = (
    Foreign("lm", "folio.models.llama_weights:is_pretrained_source", "folio.models.llama_weights:load_checkpoint"),
    Foreign("embed", "folio.models.sentence_encoder:is_sentence_encoder",
            "folio.models.sentence_encoder:load_checkpoint"),
)


class Checkpoint(NamedTuple):
    """A loaded model (eval mode), its tokenizer (None, one, or a (source, target) pair) and its config."""

    model: nn.Module
    tokenizer: Any
    config: dict


def _resolve(reference: str):
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def family(arch: Any, where: str = CONFIG) -> Family:
    """The family `arch` names (a `CheckpointError` naming `where` when none does)."""
    if not isinstance(arch, str) or arch not in ARCHS:
        raise CheckpointError(f"{where}: unknown model arch {arch!r} (Folio has {', '.join(ARCHS)})")
    return ARCHS[arch]


def config_class(arch: Any, where: str = CONFIG) -> type:
    """The config dataclass of the family `arch` names (imported, nothing built)."""
    return _resolve(family(arch, where).config)


def build_config(section: dict, where: str = CONFIG):
    """The config dataclass a "model" section describes (its `arch` names the class)."""
    cls = config_class(section.get("arch"), where)
    try:
        return cls.from_dict(section) if hasattr(cls, "from_dict") else cls(**section)
    except TypeError as err:
        raise CheckpointError(f"{where} has no valid 'model' section: {err}") from err


def model_class(section: dict, where: str = CONFIG) -> type[nn.Module]:
    """The module class a "model" section names (imported, nothing built): what a caller asks of a family
    before loading it (its `kind`, for a language model)."""
    return _resolve(family(section.get("arch"), where).model)


def build_model(section: dict, where: str = CONFIG) -> nn.Module:
    """The untrained model a "model" section describes (its weights initialised, or on the meta device
    under `torch.device("meta")`).

    >>> build_model({"arch": "gru", "vocab_size": 65, "hidden": 32}).config.hidden
    32
    """
    return model_class(section, where)(build_config(section, where))


def model_section(config: dict, where: str = CONFIG) -> dict:
    """config.json's "model" section, with its `arch` where an older checkpoint did not write one:
    classify's `type`, a recurrent classifier's `arch` gru/lstm (its cell), translate's top-level
    `model_family`, a captioner's or a character LM's missing arch."""
    section = config.get("model") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise CheckpointError(f"{where} has no valid 'model' section")
    section, task = dict(section), config.get("task")
    if "type" in section:
        section["arch"] = section.pop("type")
    elif task == "classify" and section.get("arch", "gru") in ("gru", "lstm"):
        section["cell"], section["arch"] = section.get("arch", "gru"), "rnn_classifier"
    elif task == "translate" and "arch" not in section:
        section["arch"] = f"{config.get('model_family', 'rnn')}_seq2seq"
    elif task == "caption":
        section.setdefault("arch", "captioner")
    section.setdefault("arch", "gru")
    return section


def load_checkpoint(directory: str | Path, task: str | None = None, device: str | torch.device = "cpu",
                    **options) -> Checkpoint:
    """The model, tokenizer(s) and config a model directory holds, every file checked against the others
    before the weights are read; `task`: the task the directory must belong to. A pretrained model in
    another format (`FOREIGN`: "smollm2", a GGUF file, "minilm", a Hugging Face directory) loads through its
    reader, which takes `options` (a Llama's `dtype`).

    >>> model, tokenizer, config = load_checkpoint("runs/dates", task="translate")     # doctest: +SKIP
    >>> source_tokenizer, target_tokenizer = tokenizer                                # doctest: +SKIP
    """
    for foreign in FOREIGN:
        if (task is None or task == foreign.task) and _resolve(foreign.reads)(directory):
            return _resolve(foreign.load)(directory, device, **options)
    if options:
        raise ConfigError(f"{', '.join(options)} applies to pretrained models read from another format; "
                          f"{directory} is a Folio model directory")
    config = read_config(directory, task)
    where = f"{directory}/{CONFIG}"
    section = model_section(config, where)
    if section.get("pretrained") is True:  # where a family starts from a package's weights: they are in WEIGHTS now
        section["pretrained"] = False
    try:
        model = build_checked(directory, lambda: build_model(section, where))
    except (KeyError, TypeError, AttributeError, ConfigError) as err:
        raise CheckpointError(f"{where} has no valid 'model' section: {err}") from err
    tokenizer = load_tokenizers(directory, section, model)
    load_weights(model, directory)
    return Checkpoint(model.to(device).eval(), tokenizer, config)


def load_tokenizers(directory: str | Path, section: dict, model: nn.Module | None = None):
    """The tokenizer(s) a checkpoint of `section`'s family holds (`Family.tokenizers`): None, one, or a (source,
    target) pair. With `model`, each is checked to fit the rows of its embedding (`check_vocabulary`)."""
    tokenizers = []
    for file, rows in family(section.get("arch")).tokenizers:
        path = Path(directory) / file
        if file and not path.is_file():
            raise CheckpointError(f"{directory} has no {file}")
        tokenizer = load_tokenizer(path)
        if model is not None:
            check_vocabulary(directory, tokenizer, getattr(model.config, rows, None), file or "tokenizer")
        tokenizers.append(tokenizer)
    return tokenizers[0] if len(tokenizers) == 1 else tuple(tokenizers) or None


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _with_tied(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """`state` completed with the names of tied weights that were stored once (see _unique_tensors)."""
    own = model.state_dict()
    stored = {(t.data_ptr(), t.dtype, tuple(t.shape)): name for name, t in own.items() if name in state}
    for name, tensor in own.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if name not in state and key in stored:
            state[name] = state[stored[key]]
    return state


def read_config(directory: str | Path, task: str | None = None) -> dict:
    """The checkpoint's config, checked to belong to `task` (when given: otherwise to name a task)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist" if not directory.exists()
                              else f"{directory} is a file, not a model directory (one with {CONFIG} and {WEIGHTS})")
    path = directory / CONFIG
    if not path.exists():
        raise CheckpointError(f"{directory} is not a Folio checkpoint: it has no {CONFIG}")
    if not path.is_file():  # a FIFO would block the read
        raise CheckpointError(f"{path} is not a regular file")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    if not isinstance(config, dict) or (config.get("task") != task if task else not isinstance(config.get("task"), str)):
        found = config.get("task") if isinstance(config, dict) else None
        raise CheckpointError(f"{directory} holds a {found!r} model, not a {task!r} model")
    return config


def _expected_tensors(model: nn.Module) -> tuple[dict[str, tuple[int, ...]], list[list[str]]]:
    """The shape of every tensor of `model`'s state dict, and its names grouped by tensor (tied weights:
    one group, of which a checkpoint stores one name). Works on the meta device (nothing allocated)."""
    state = unwrap(model).state_dict(keep_vars=True)  # the Parameter objects themselves: tied ones are one object
    groups: dict[int, list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault(id(tensor), []).append(name)
    return {name: tuple(tensor.shape) for name, tensor in state.items()}, list(groups.values())


def check_weights(model: nn.Module, directory: str | Path) -> None:
    """Refuse (a `CheckpointError` naming the file and the tensor) a `model.safetensors` whose tensors are not
    those of `model`: one missing, one extra, or one of another shape. Only the file's header is read, and
    `model` may live on the meta device, so a config.json that asks for more than the weights hold is caught
    before anything of that size is allocated.

        with torch.device("meta"):
            check_weights(build_model(config["model"]), directory)   # then build it for real
    """
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    shapes, groups = _expected_tensors(model)
    extra = sorted(set(stored) - set(shapes))
    if extra:
        raise CheckpointError(f"{path} holds tensor {extra[0]!r}, which the model in {CONFIG} does not have "
                              f"({len(extra)} such); is it the checkpoint of another model?")
    for names in groups:
        if not any(name in stored for name in names):
            raise CheckpointError(f"{path} lacks tensor {names[0]!r} of the model in {CONFIG}; the file is incomplete")
    for name, shape in stored.items():
        if shape != shapes[name]:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}, but the model in {CONFIG} "
                                  f"needs {list(shapes[name])}; the sizes in {CONFIG} do not match the weights")


def build_checked(directory: str | Path, build: Callable[[], nn.Module]) -> nn.Module:
    """`build()`, once `check_weights` has compared the model it builds, on the meta device, with
    `model.safetensors` in `directory`: a config.json that asks for a billion-row embedding is refused
    by name before a byte of it is allocated.

        model = load_weights(build_checked(directory, lambda: build_model(config["model"])), directory)
    """
    with torch.device("meta"):
        skeleton = build()
    check_weights(skeleton, directory)
    return build()


def check_vocabulary(directory: str | Path, tokenizer, rows: int | None, which: str = "tokenizer") -> None:
    """Refuse a tokenizer with more entries than the model's embedding has rows (its ids past the end would
    fail mid-run); fewer is fine (a BERT pretrained with next-sentence prediction keeps 3 rows of its own)."""
    if rows is not None and len(tokenizer) > rows:
        raise CheckpointError(f"{directory}: the {which} has {len(tokenizer)} entries, more than the {rows} rows of "
                              f"the model's embedding ({CONFIG}); the tokenizer files belong to another model")


def load_weights(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load `model.safetensors` onto the model's device, whatever device it was saved from.

    The file must hold exactly the model's tensors (`check_weights`), every one of them finite: a
    `CheckpointError` names the file and the first tensor that is not.
    """
    path = Path(directory) / WEIGHTS
    check_weights(model, directory)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values; the run that wrote it "
                                  "diverged (retrain with a lower --lr)")
    try:
        unwrap(model).load_state_dict(_with_tied(state, unwrap(model)))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not fit the model in {CONFIG}: {first}") from err
    return model


