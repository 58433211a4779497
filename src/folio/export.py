"""`folio export`: a trained model as ONNX (checked under onnxruntime) or TorchScript.

    folio export --model runs/lm --format onnx                 # runs/lm/model.onnx
    folio export --model runs/imdb --format onnx --quantize    # also runs/imdb/model.int8.onnx
    folio export --model runs/lm --format torchscript          # runs/lm/model.torchscript.pt

What is exported, per model kind (batch and length are dynamic):

* recurrent language model: `(ids (B, T) int64, h (L, B, H)[, c]) → (logits (B, T, V), h[, c])`, one call
  per chunk of text, the state passed back in: generation steps one character at a time with T = 1;
* GPT: `ids (B, T ≤ context) → logits (B, T, V)` (no cache: each call reads its window);
* classifier (recurrent or Transformer): `(ids (B, T) int64, mask (B, T) bool) → probabilities (B, C)`.

Every export is run on fresh inputs and compared with PyTorch; a difference over 1e-4 is an error.
Ids come from the checkpoint's own vocabulary or tokenizer files, which stay beside the export.
"""

from __future__ import annotations

import json
import time
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


def _wrap(directory: Path) -> tuple[nn.Module, callable, list[str], list[str], dict]:
    """The export wrapper for the model in `directory`, a function making example inputs (batch, steps),
    input and output names, and dynamic axes."""
    config = json.loads((directory / "config.json").read_text()) if (directory / "config.json").exists() else None
    if config is None:
        raise CheckpointError(f"--model {directory}: no config.json there (is it a model directory?)")
    task = config.get("task")
    if task == "lm":
        from folio.models.transformer import GPT
        from folio.tasks.lm import LanguageModel

        model = LanguageModel.from_pretrained(directory).model
        vocab = model.config.vocab_size
        if isinstance(model, GPT):
            context = model.config.context
            return (_GPT(model), lambda b, t: (torch.randint(vocab, (b, min(t, context))),), ["ids"], ["logits"],
                    {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}})
        layers, hidden = model.config.layers, model.config.hidden
        lstm = model.config.arch == "lstm"

        def example(b, t):
            state = (torch.randn(layers, b, hidden) * 0.5,) * (2 if lstm else 1)
            return (torch.randint(vocab, (b, t)), *state)

        states = ["h", "c"] if lstm else ["h"]
        axes = {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"}}
        axes.update({name: {1: "batch"} for name in states + [f"{s}_out" for s in states]})
        return _RecurrentLM(model), example, ["ids", *states], ["logits", *(f"{s}_out" for s in states)], axes
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

        return (_Classifier(clf.model), example, ["ids", "mask"], ["probabilities"],
                {"ids": {0: "batch", 1: "steps"}, "mask": {0: "batch", 1: "steps"}, "probabilities": {0: "batch"}})
    if task == "translate":
        raise ConfigError("exporting translation models is not supported yet (lm and classify models are)")
    raise CheckpointError(f"{directory}/config.json: task {task!r} cannot be exported")


def _compare(ours, reference) -> float:
    return max(float((torch.as_tensor(a) - b.detach()).abs().max()) for a, b in zip(ours, reference, strict=True))


def export(directory: str | Path, fmt: str = "onnx", out: str | Path | None = None, quantize: bool = False) -> dict:
    """Export the model in `directory`; returns where it went and how closely it matches PyTorch."""
    directory = Path(directory)
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"--format {fmt!r}: choose onnx or torchscript")
    if quantize and fmt != "onnx":
        raise ConfigError("--quantize applies to ONNX exports (onnxruntime dynamic int8 quantization)")
    wrapper, example, inputs, outputs, axes = _wrap(directory)
    wrapper.eval()
    out = Path(out) if out else directory / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    with torch.no_grad():
        sample = example(2, 5)  # T > 1: a single step would trace the one-step generation path
        checks = [example(3, 9), example(1, 2)]
        references = [wrapper(*c) for c in checks]
        references = [r if isinstance(r, tuple) else (r,) for r in references]
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, sample, check_trace=False)
            traced.save(str(out))
            loaded = torch.jit.load(str(out))
            runs = [loaded(*c) for c in checks]
            runs = [r if isinstance(r, tuple) else (r,) for r in runs]
        else:
            runs = _export_onnx(wrapper, sample, out, inputs, outputs, axes, checks)
    worst = max(_compare(run, ref) for run, ref in zip(runs, references, strict=True))
    if worst > TOLERANCE:
        raise CheckpointError(f"the exported model differs from PyTorch by {worst:.2e} (over {TOLERANCE:g})")
    report = {"path": str(out), "format": fmt, "max_abs_diff": worst, "inputs": inputs, "outputs": outputs}
    if quantize:
        report["int8"] = _quantize(out, inputs, checks, references, example)
    return report


def _export_onnx(wrapper, sample, out: Path, inputs, outputs, axes, checks) -> list:
    try:
        import onnxruntime
    except ModuleNotFoundError as err:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'folio[export]'") from err
    import warnings

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
