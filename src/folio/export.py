"""`folio export`: a trained model as ONNX (checked under onnxruntime) or TorchScript.

    folio export --model runs/lm --format onnx                 # runs/lm/model.onnx
    folio export --model runs/imdb --format onnx --quantize    # also runs/imdb/model.int8.onnx
    folio export --model runs/lm --format torchscript          # runs/lm/model.torchscript.pt
    folio export --model runs/dates --format onnx              # runs/dates/encoder.onnx + decoder_step.onnx

What is exported, per model kind (batch and length are dynamic):

* recurrent language model: `(ids (B, T) int64, h (L, B, H)[, c]) → (logits (B, T, V), h[, c])`, one call
  per chunk of text, the state passed back in: generation steps one character at a time with T = 1;
* GPT: `ids (B, T ≤ context) → logits (B, T, V)` (no cache: each call reads its window);
* classifier (recurrent or Transformer): `(ids (B, T) int64, mask (B, T) bool) → probabilities (B, C)`;
* translation model (recurrent or Transformer): two graphs, as ONNX encoder–decoders usually are, since
  the output loop depends on the data. `encoder`: `(src (B, S) int64, src_lengths (B,) int64) → the
  decoder's initial state`; `decoder_step`: `(tokens (N,) int64, *state) → (logits (N, V), the state
  tensors that changed, as NAME_out, attention (N, S))`. The state, by family:

  - recurrent: `h (L, N, H)[, c][, feed (N, H)], memory (N, S, Dm)[, keys (N, S, K)], mask (N, S) bool`;
    h, c and feed (input feeding's previous attentional vector) change at every step. Without attention
    the step reads h[, c] alone and has no attention output (the encoder still returns the memory);
  - Transformer: `mask (N, S) bool, cross_keys, cross_values (L, N, heads, S, d), self_keys,
    self_values (L, N, heads, t, d)`: the per-layer key/value caches, the self-attention ones growing by
    one position per step (t = 0 after the encoder), so a step costs one position's computation.

  Greedy decoding: `state = encoder(src, src_lengths)` by name, tokens = SOS; then `logits, *new[,
  attention] = decoder_step(tokens, *state)`, put each NAME_out back as NAME, tokens = argmax, until EOS.
  The report's `decoding` names the state, what replaces what, and the SOS/EOS ids; `graphs` every
  input's and output's shape. Beam search keeps N = B × beams rows: repeat each sentence's state rows,
  and after each step take the changing ones' rows of the surviving hypotheses.

Every export is run on fresh inputs and compared with PyTorch; a difference over 1e-4 is an error.
Ids come from the checkpoint's own vocabulary or tokenizer files, which stay beside the export.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from folio.errors import CheckpointError, ConfigError

TOLERANCE = 1e-4


class _RecurrentLM(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.lstm = model.config.arch == "lstm"

    def forward(self, ids: Tensor, h: Tensor, c: Tensor | None = None):
        logits, state = self.model(ids, (h, c) if self.lstm else h)
        return (logits, *state) if self.lstm else (logits, state)


class _GPT(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor) -> Tensor:
        return self.model._run(ids, None)[0]


class _Classifier(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model(ids, mask).softmax(-1)


# ---- translation: an encoder graph and a one-step decoder graph -----------------------------------
class _Seq2SeqEncoder(nn.Module):
    """(src (B, S), src_lengths (B,)) → the recurrent decoder's initial state, as the tensors `names`."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        state = self.model.encode(src, src_lengths)
        h, c = state.rnn if isinstance(state.rnn, tuple) else (state.rnn, None)
        values = {"h": h, "c": c, "feed": state.feed, "memory": state.memory, "keys": state.keys, "mask": state.mask}
        return tuple(values[name] for name in self.names)


class _Seq2SeqStep(nn.Module):
    """(tokens (N,), *state) → (logits (N, V), h[, c][, feed], attention (N, S) when the model attends)."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        from folio.models.seq2seq import DecoderState

        s = dict(zip(self.names, state, strict=True))
        rnn = (s["h"], s["c"]) if "c" in s else s["h"]
        # Luong dot has no key projection: keys=None makes the attention score the memory itself.
        decoder_state = DecoderState(rnn, s.get("feed"), s.get("memory"), s.get("keys"), s.get("mask"))
        logits, new, weights = self.model.decode_step(tokens, decoder_state)
        rnn = new.rnn if isinstance(new.rnn, tuple) else (new.rnn,)
        feed = (new.feed,) if new.feed is not None else ()
        return (logits, *rnn, *feed, *(() if weights is None else (weights,)))


def _cross_cache(block, memory: Tensor) -> tuple[Tensor, Tensor]:
    """What a decoder block's cross-attention computes from the memory at the first step, (N, heads, S, d) each."""
    attn = block.cross_attn
    return attn._split(attn.k_proj(memory)), attn._split(attn.v_proj(memory))


class _TransformerEncoder(nn.Module):
    """(src (B, S), src_lengths (B,)) → mask (B, S), cross-attention keys/values of every decoder layer
    (L, B, heads, S, d), and empty self-attention caches (L, B, heads, 0, d)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        state = self.model.encode(src, src_lengths)
        keys, values = zip(*(_cross_cache(block, state.memory) for block in self.model.decoder), strict=True)
        cross_keys, cross_values = torch.stack(keys), torch.stack(values)  # (L, B, heads, S, d)
        empty = cross_keys[:, :, :, :0]  # (L, B, heads, 0, d): nothing decoded yet
        return state.mask, cross_keys, cross_values, empty, empty


class _TransformerStep(nn.Module):
    """(tokens (N,), mask, cross_keys, cross_values, self_keys, self_values) → (logits (N, V), self_keys and
    self_values one position longer, attention (N, S): the last layer's cross-attention, mean over heads)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, mask: Tensor, cross_keys: Tensor, cross_values: Tensor, self_keys: Tensor,
                self_values: Tensor) -> tuple[Tensor, ...]:
        from folio.models.transformer import TransformerDecoderState

        caches = [{"self": (self_keys[i], self_values[i]), "cross": (cross_keys[i], cross_values[i])}
                  for i in range(len(self.model.decoder))]
        # The position of the new token is the cache's length, read from its shape, so it stays dynamic in the
        # graph. Cross-attention reads its cached keys/values and never the memory: any tensor stands in for it.
        state = TransformerDecoderState(cross_keys[0], mask, caches, self_keys.size(3))
        logits, new, weights = self.model.decode_step(tokens, state)
        grown = [c["self"] for c in new.caches]
        return logits, torch.stack([k for k, _ in grown]), torch.stack([v for _, v in grown]), weights


def _onnx_decoder(model):
    """The recurrent model with its FastGRU decoder swapped for a plain `nn.GRU` holding the same weights:
    FastGRU's one-step path calls `torch.gru_cell`, which has no ONNX symbolic, while `nn.GRU` maps onto
    ONNX's GRU operator. Same parameters, same maths."""
    from folio.nn.gru import FastGRU

    if not isinstance(model.decoder, FastGRU):
        return model
    twin = copy.deepcopy(model)
    gru = model.decoder
    twin.decoder = nn.GRU(gru.input_size, gru.hidden_size, gru.num_layers, batch_first=gru.batch_first)
    twin.decoder.load_state_dict(gru.state_dict())
    return twin.eval()


@dataclass
class _Graph:
    """One graph to export: the wrapper module, a maker of example inputs (batch, length), names, dynamic axes."""

    name: str  # the file stem: model, encoder, decoder_step
    wrapper: nn.Module
    example: Callable[[int, int], tuple[Tensor, ...]]
    inputs: list[str]
    outputs: list[str]
    axes: dict


def _source_example(vocab: int, pad_id: int) -> Callable[[int, int], tuple[Tensor, Tensor]]:
    def example(b: int, s: int) -> tuple[Tensor, Tensor]:
        lengths = torch.randint(1, s + 1, (b,))
        lengths[0] = s  # as a padded batch: the longest source fills the width
        mask = torch.arange(s)[None, :] < lengths[:, None]
        return torch.randint(3, vocab, (b, s)).masked_fill(~mask, pad_id), lengths

    return example


def _translation(directory: Path, fmt: str) -> tuple[list[_Graph], dict]:
    """The encoder and decoder-step graphs of a translation model, and what a decoding loop needs to know."""
    from folio.models.seq2seq import Seq2Seq
    from folio.tasks.translate import Translator

    translator = Translator.from_pretrained(directory)
    model, c = translator.model, translator.model.config
    sources = _source_example(c.src_vocab_size, c.pad_id)
    axes = {"src": {0: "batch", 1: "source"}, "src_lengths": {0: "batch"}, "tokens": {0: "batch"}, "logits": {0: "batch"},
            "mask": {0: "batch", 1: "source"}, "attention": {0: "batch", 1: "source"}}
    if isinstance(model, Seq2Seq):
        rnn = ["h", "c"] if c.cell == "lstm" else ["h"]
        changing = rnn + (["feed"] if model.uses_feed else [])
        attends = model.attention is not None
        keys = ["keys"] if c.attention in ("bahdanau", "luong_general") else []  # luong_dot scores the memory itself
        state = changing + (["memory", *keys, "mask"] if attends else [])
        # Without attention the step reads the RNN state alone, but the encoder still returns the memory: the
        # ONNX exporter fails on a packed RNN whose padded output nothing uses.
        encoded = state if attends else [*state, "memory"]
        encoder = _Seq2SeqEncoder(model, encoded)
        step = _Seq2SeqStep(_onnx_decoder(model) if fmt == "onnx" else model, state)
        axes.update({n: {1: "batch"} for n in rnn + [f"{n}_out" for n in rnn]})
        axes.update({n: {0: "batch"} for n in ("feed", "feed_out")})
        axes.update({n: {0: "batch", 1: "source"} for n in ("memory", "keys")})
    else:
        changing = ["self_keys", "self_values"]
        state = encoded = ["mask", "cross_keys", "cross_values", *changing]
        encoder, step, attends = _TransformerEncoder(model), _TransformerStep(model), True
        axes.update({n: {1: "batch", 3: "source"} for n in ("cross_keys", "cross_values")})
        axes.update({n: {1: "batch", 3: "decoded"} for n in changing})
        axes.update({f"{n}_out": {1: "batch", 3: "decoded+1"} for n in changing})
    step_outputs = ["logits", *(f"{n}_out" for n in changing), *(["attention"] if attends else [])]
    encoder.eval()
    step.eval()

    @torch.no_grad()
    def state_example(b: int, s: int) -> tuple[Tensor, ...]:
        """Tokens and a decoder state s // 3 steps into decoding b random sources of up to s tokens."""
        values = dict(zip(encoded, encoder(*sources(b, s)), strict=True))
        for _ in range(s // 3):
            out = dict(zip(step_outputs, step(torch.randint(c.tgt_vocab_size, (b,)), *(values[n] for n in state)), strict=True))
            values.update({n: out[f"{n}_out"] for n in changing})
        return (torch.randint(c.tgt_vocab_size, (b,)), *(values[n] for n in state))

    graphs = [_Graph("encoder", encoder, sources, ["src", "src_lengths"], encoded, axes),
              _Graph("decoder_step", step, state_example, ["tokens", *state], step_outputs, axes)]
    decoding = {"sos_id": c.sos_id, "eos_id": c.eos_id, "pad_id": c.pad_id,
                "state": state, "state_outputs": {f"{n}_out": n for n in changing},
                "source": ("src_tokenizer.json ids" + (" in reverse order" if translator.reverse_source else "") + ", then EOS"),
                "reverse_source": translator.reverse_source, "target": "tgt_tokenizer.json ids", "max_src_len": c.max_src_len}
    if not isinstance(model, Seq2Seq):
        decoding["max_decoded"] = model.positions.max_len  # positions the decoder has
    return graphs, decoding


def _wrap(directory: Path, fmt: str) -> tuple[list[_Graph], dict | None]:
    """The graphs to export for the model in `directory` (one, or a translation model's two), and for a
    translation model what its decoding loop needs to know."""
    config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").exists() else None
    if config is None:
        raise CheckpointError(f"--model {directory}: no config.json there (is it a model directory?)")
    task = config.get("task")
    if task == "lm":
        from folio.models.transformer import GPT, MaskedLanguageModel
        from folio.tasks.lm import LanguageModel

        model = LanguageModel.from_pretrained(directory).model
        if isinstance(model, MaskedLanguageModel):
            raise ConfigError(f"{directory} is a masked LM, which does not generate: export the classifier it starts")
        vocab = model.config.vocab_size
        if isinstance(model, GPT):
            context = model.config.context
            return [_Graph("model", _GPT(model), lambda b, t: (torch.randint(vocab, (b, min(t, context))),), ["ids"], ["logits"],
                           {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}})], None
        layers, hidden = model.config.layers, model.config.hidden
        lstm = model.config.arch == "lstm"

        def example(b, t):
            state = (torch.randn(layers, b, hidden) * 0.5,) * (2 if lstm else 1)
            return (torch.randint(vocab, (b, t)), *state)

        states = ["h", "c"] if lstm else ["h"]
        axes = {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}}
        axes.update({name: {1: "batch"} for name in states + [f"{s}_out" for s in states]})
        return [_Graph("model", _RecurrentLM(model), example, ["ids", *states], ["logits", *(f"{s}_out" for s in states)], axes)], None
    if task == "classify":
        from folio.tasks.classify import TextClassifier

        clf = TextClassifier.from_pretrained(directory)
        if clf.encoder is not None:
            raise ConfigError(f"{directory} is a head over frozen MiniLM vectors: export the encoder's features instead")
        vocab = clf.model.embedding.num_embeddings  # recurrent and Transformer classifiers both expose it

        def example(b, t):
            lengths = torch.randint(1, t + 1, (b,))
            lengths[0] = t
            mask = torch.arange(t)[None, :] < lengths[:, None]
            return torch.randint(1, vocab, (b, t)) * mask, mask

        return [_Graph("model", _Classifier(clf.model), example, ["ids", "mask"], ["probabilities"],
                       {"ids": {0: "batch", 1: "steps"}, "mask": {0: "batch", 1: "steps"}, "probabilities": {0: "batch"}})], None
    if task == "translate":
        return _translation(directory, fmt)
    raise CheckpointError(f"{directory}/config.json: task {task!r} cannot be exported")


def _as_tuple(outputs) -> tuple:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _compare(ours, reference) -> float:
    worst = 0.0
    for a, b in zip(ours, reference, strict=True):
        a = torch.as_tensor(a)
        if tuple(a.shape) != tuple(b.shape):
            raise CheckpointError(f"the exported model gives shape {tuple(a.shape)} where PyTorch gives {tuple(b.shape)}")
        if b.numel():  # an empty cache has nothing to compare
            worst = max(worst, float((a.double() - b.detach().double()).abs().max()))
    return worst


def _signature(graph: _Graph, sample: tuple[Tensor, ...], outputs: tuple[Tensor, ...]) -> dict:
    """Every input's and output's shape (a dynamic axis by its name) and dtype."""
    shapes, dtypes = {}, {}
    for name, tensor in zip(graph.inputs + graph.outputs, (*sample, *outputs), strict=True):
        dynamic = graph.axes.get(name, {})
        shapes[name] = [dynamic.get(i, size) for i, size in enumerate(tensor.shape)]
        dtypes[name] = str(tensor.dtype).removeprefix("torch.")
    return {"shapes": shapes, "dtypes": dtypes}


def export(directory: str | Path, fmt: str = "onnx", out: str | Path | None = None, quantize: bool = False) -> dict:
    """Export the model in `directory`; returns where it went, how closely it matches PyTorch, and every
    input's and output's name, shape and dtype.

    A translation model becomes two graphs, `encoder` and `decoder_step` (`out`, if given, is the folder
    they go to), described under `graphs`, with what a decoding loop needs under `decoding`.

        >>> export("runs/dates")["graphs"]["decoder_step"]["inputs"]   # doctest: +SKIP
        ['tokens', 'h', 'feed', 'memory', 'keys', 'mask']
    """
    directory = Path(directory)
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"--format {fmt!r}: choose onnx or torchscript")
    if quantize and fmt != "onnx":
        raise ConfigError("--quantize applies to ONNX exports (onnxruntime dynamic int8 quantization)")
    graphs, decoding = _wrap(directory, fmt)
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    if decoding is None:
        paths = [Path(out) if out else directory / f"model{suffix}"]
    else:
        folder = Path(out) if out else directory
        if folder.suffix in (".onnx", ".pt"):
            raise ConfigError(f"--out {folder}: a translation model exports two graphs (encoder, decoder_step); "
                              "give a folder for them")
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{g.name}{suffix}" for g in graphs]
    reports = [{"path": str(path), "inputs": graph.inputs, "outputs": graph.outputs, **_export_graph(graph, fmt, path, quantize)}
               for graph, path in zip(graphs, paths, strict=True)]
    worst = max(r["max_abs_diff"] for r in reports)
    if decoding is None:
        return {**reports[0], "format": fmt}
    return {"path": str(paths[0].parent), "format": fmt, "max_abs_diff": worst,
            "graphs": {g.name: r for g, r in zip(graphs, reports, strict=True)}, "decoding": decoding}


def _export_graph(graph: _Graph, fmt: str, out: Path, quantize: bool) -> dict:
    """Export one graph to `out`, run it on fresh inputs and compare with PyTorch (an error over 1e-4)."""
    graph.wrapper.eval()
    with torch.no_grad():
        sample = graph.example(2, 5)  # T > 1: a language model would trace its one-step generation path
        checks = [graph.example(3, 9), graph.example(1, 2)]
        references = [_as_tuple(graph.wrapper(*c)) for c in checks]
        signature = _signature(graph, sample, _as_tuple(graph.wrapper(*sample)))
        if fmt == "torchscript":
            with warnings.catch_warnings():
                # Notes on Python conditions fixed at trace time (one step at a time, positions in range):
                # they hold for every input the graph is meant for, and the checks below run other sizes.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(graph.wrapper, sample, check_trace=False)
            traced.save(str(out))
            loaded = torch.jit.load(str(out))
            runs = [_as_tuple(loaded(*c)) for c in checks]
        else:
            runs = _export_onnx(graph.wrapper, sample, out, graph.inputs, graph.outputs, graph.axes, checks)
    worst = max(_compare(run, ref) for run, ref in zip(runs, references, strict=True))
    if worst > TOLERANCE:
        what = "the exported model" if graph.name == "model" else f"the exported {graph.name}"
        raise CheckpointError(f"{what} differs from PyTorch by {worst:.2e} (over {TOLERANCE:g})")
    report = {"max_abs_diff": worst, **signature}
    if quantize:
        report["int8"] = _quantize(out, graph.inputs, checks, references, graph.example)
    return report


def _export_onnx(wrapper, sample, out: Path, inputs, outputs, axes, checks) -> list:
    try:
        import onnxruntime
    except ModuleNotFoundError as err:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'folio[export]'") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on batch sizes and its own deprecation
        torch.onnx.export(wrapper, sample, str(out), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return [session.run(None, {name: t.numpy() for name, t in zip(inputs, check, strict=True)}) for check in checks]


def _quantize(path: Path, inputs, checks, references, example) -> dict:
    """Dynamic int8 quantization of the ONNX model's weights; its speed and drift against float32."""
    import logging

    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process goes to the root logger
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    sessions = {name: onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for name, p in (("float32", path), ("int8", quantized))}
    drift = max(_compare(sessions["int8"].run(None, {n: t.numpy() for n, t in zip(inputs, c, strict=True)}), ref)
                for c, ref in zip(checks, references, strict=True))
    feed = {n: t.numpy() for n, t in zip(inputs, example(8, 32), strict=True)}
    timings = {}
    for name, session in sessions.items():
        session.run(None, feed)
        start = time.perf_counter()
        for _ in range(3):
            session.run(None, feed)
        timings[name] = (time.perf_counter() - start) / 3
    return {"path": str(quantized), "max_abs_diff_vs_pytorch": drift, "bytes": quantized.stat().st_size,
            "float32_bytes": path.stat().st_size, "ms_per_batch_8x32": {k: round(1000 * v, 2) for k, v in timings.items()},
            "speedup": round(timings["float32"] / timings["int8"], 2)}


# ---- CLI ----------------------------------------------------------------------------------------
def _cli_export(args) -> int:
    print(json.dumps(export(args.model, args.format, args.out, args.quantize)))
    return 0


def add_cli(e) -> None:
    """`folio export --model DIR [--format onnx|torchscript]`."""
    e.add_argument("--model", required=True, help="model directory")
    e.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    e.add_argument("--out", default=None, help="default: model.onnx / model.torchscript.pt in the model directory (a translation model: a folder "
                        "for encoder.* and decoder_step.*)")
    e.add_argument("--quantize", action="store_true", help="also write a dynamic int8 ONNX model, with its speed and drift")
    e.set_defaults(func=_cli_export)
