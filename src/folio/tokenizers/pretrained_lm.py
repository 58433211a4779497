"""A pretrained causal language model's own tokenizer (SmolLM2, GPT-2 style byte-level BPE), read from a GGUF
file's metadata or a Hugging Face directory's `tokenizer.json`, through Hugging Face `tokenizers`.

Unlike Folio's other tokenizers, ids are the model's own, unshifted: they index its embedding rows, so there
is no padding id (`pad_id` is None, as for a character model) and id 0 is whatever the model put there
(SmolLM2's <|endoftext|>). `bos_id`/`eos_id` are the model's (SmolLM2: <|im_start|> 1, <|im_end|> 2), and
`apply_chat_template` renders its chat template.

    >>> from folio.models.llama_weights import load_pretrained
    >>> _, tok = load_pretrained("smollm2")                          # doctest: +SKIP
    >>> tok.encode("Hello world"), tok.eos_id                       # doctest: +SKIP
    ([19556, 905], 2)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from folio.errors import CheckpointError, ConfigError
from folio.tokenizers.base import HF_FILE
from folio.tokenizers.hf import HFTokenizer, library, library_tokenizer

# GGUF's tokenizer.ggml.pre names the regular expressions llama.cpp splits text with before BPE. These
# are the byte-level ones Folio reproduces: GPT-2's, and GPT-2's after each digit is split off (StarCoder's
# vocabulary, which SmolLM2 shares).
_GPT2_PRE = ("default", "gpt2", "gpt-2")
_DIGITS_PRE = ("smollm", "starcoder", "refact")
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values of special and added tokens


class PretrainedLMTokenizer(HFTokenizer):
    """Byte-level BPE with the model's own ids, special tokens, begin/end ids and chat template.

    `encode` adds no special tokens; where `add_bos` is set the model expects `bos_id` before a text.
    """

    kind = "pretrained_lm"

    def __init__(self, tokenizer, bos_id: int | None = None, eos_id: int | None = None, unk_id: int | None = None,
                 add_bos: bool = False, chat_template: str | None = None):
        # Not HFTokenizer.__init__: it shifts ids by one to free id 0 for padding, and these ids must stay
        # the embedding rows of the pretrained model.
        self.tokenizer = tokenizer
        self.offset = 0
        added = tokenizer.get_added_tokens_decoder()  # id → AddedToken
        self._specials = tuple(added[i].content for i in sorted(added) if added[i].special)
        self._bos, self._eos, self._unk = bos_id, eos_id, unk_id
        self.add_bos = add_bos
        self.chat_template = chat_template

    @property
    def pad_id(self) -> int | None:
        return None

    @property
    def bos_id(self) -> int | None:
        return self._bos

    @property
    def eos_id(self) -> int | None:
        return self._eos

    @property
    def unk_id(self) -> int | None:
        return self._unk

    def tokenize(self, text: str) -> tuple[list[str], list[int]]:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)  # no post-processor's BOS
        return list(encoding.tokens), list(encoding.ids)

    def apply_chat_template(self, messages: Iterable[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The model's chat template rendered for `messages` ({"role": ..., "content": ...}), as Hugging Face's
        `apply_chat_template(..., tokenize=False)` renders it.

        >>> tok.apply_chat_template([{"role": "user", "content": "Hi"}])     # doctest: +SKIP
        '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
        """
        if not self.chat_template:
            raise ConfigError("this model has no chat template: give it a plain prompt instead")
        try:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ModuleNotFoundError as err:
            raise ConfigError("rendering the model's chat template needs jinja2: pip install jinja2 "
                              "(or give the prompt in the template's format yourself, without --chat)") from err

        def raise_exception(message: str):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        specials = {name: None if i is None else self.id_to_token(i)
                    for name, i in (("bos_token", self._bos), ("eos_token", self._eos))}
        try:
            return env.from_string(self.chat_template).render(messages=list(messages),
                                                              add_generation_prompt=add_generation_prompt, **specials)
        except TemplateError as err:
            raise ConfigError(f"the model's chat template failed: {err}") from err

    def config(self) -> dict:
        return {"type": self.kind, "bos_id": self._bos, "eos_id": self._eos, "unk_id": self._unk,
                "add_bos": self.add_bos, "chat_template": self.chat_template}

    @classmethod
    def from_dict(cls, data: dict) -> PretrainedLMTokenizer:
        return cls(library_tokenizer(data["tokenizer"]), data.get("bos_id"), data.get("eos_id"), data.get("unk_id"),
                   data.get("add_bos", False), data.get("chat_template"))

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], source: str | Path) -> PretrainedLMTokenizer:
        """The tokenizer a GGUF file describes in its `tokenizer.ggml.*` and `tokenizer.chat_template` fields
        (`metadata`: field name → value); `source` names the file in errors."""
        if "tokenizer.ggml.tokens" not in metadata:
            raise CheckpointError(f"{source}: the GGUF metadata has no tokenizer (tokenizer.ggml.tokens is missing)")
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise CheckpointError(f"{source}: tokenizer.ggml.model is {model!r}; Folio reads byte-level BPE ('gpt2') "
                                  "tokenizers only")
        if "tokenizer.ggml.merges" not in metadata:
            raise CheckpointError(f"{source}: the byte-level BPE tokenizer has no merges (tokenizer.ggml.merges)")
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in _GPT2_PRE + _DIGITS_PRE:
            raise CheckpointError(f"{source}: tokenizer.ggml.pre {pre!r} is a text splitting Folio does not reproduce "
                                  f"(it reads {', '.join(_GPT2_PRE + _DIGITS_PRE)})")
        tokens = list(metadata["tokenizer.ggml.tokens"])
        types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
        merges = [tuple(merge.split(" ")) for merge in metadata["tokenizer.ggml.merges"]]
        if len(types) != len(tokens) or any(len(merge) != 2 for merge in merges):
            raise CheckpointError(f"{source}: the tokenizer's token types or merges are malformed")

        hf = library()
        vocab = {token: i for i, token in enumerate(tokens)}
        tokenizer = hf.Tokenizer(hf.models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        byte_level = hf.pre_tokenizers.ByteLevel(add_prefix_space=bool(metadata.get("tokenizer.ggml.add_space_prefix")))
        tokenizer.pre_tokenizer = (hf.pre_tokenizers.Sequence([hf.pre_tokenizers.Digits(individual_digits=True), byte_level])
                                   if pre in _DIGITS_PRE else byte_level)
        tokenizer.decoder = hf.decoders.ByteLevel()
        # Control tokens (<|im_start|>...) and user-defined ones are matched whole in the text, never split.
        tokenizer.add_special_tokens([hf.AddedToken(t, special=True, normalized=False)
                                      for t, kind in zip(tokens, types, strict=True) if kind == _CONTROL])
        tokenizer.add_tokens([hf.AddedToken(t, special=False, normalized=False)
                              for t, kind in zip(tokens, types, strict=True) if kind == _USER_DEFINED])
        if tokenizer.get_vocab_size() != len(tokens):
            raise CheckpointError(f"{source}: the tokenizer's {len(tokens)} tokens are not all distinct")

        def special(key: str) -> int | None:
            value = metadata.get(f"tokenizer.ggml.{key}_token_id")
            return None if value is None else int(value)

        return cls(tokenizer, special("bos"), special("eos"), special("unknown"),
                   bool(metadata.get("tokenizer.ggml.add_bos_token", False)), metadata.get("tokenizer.chat_template"))

    @classmethod
    def from_directory(cls, directory: str | Path) -> PretrainedLMTokenizer:
        """A Hugging Face model directory's tokenizer: `tokenizer.json`, with the begin/end tokens and the chat
        template from `tokenizer_config.json` where there is one."""
        directory = Path(directory)
        file = directory / HF_FILE
        if not file.is_file():
            raise CheckpointError(f"{directory}: there is no {HF_FILE} (the model's tokenizer)")
        try:
            tokenizer = library().Tokenizer.from_file(str(file))
            settings_file = directory / "tokenizer_config.json"
            settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
        except Exception as err:  # the library's own error type, OSError, bad JSON
            raise CheckpointError(f"cannot read the tokenizer in {directory}: {err}") from err

        def special(key: str) -> int | None:
            token = settings.get(f"{key}_token")
            token = token.get("content") if isinstance(token, dict) else token
            return None if token is None else tokenizer.token_to_id(token)

        template = settings.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return cls(tokenizer, special("bos"), special("eos"), special("unk"), bool(settings.get("add_bos_token", False)),
                   template)


__all__ = ["PretrainedLMTokenizer"]
