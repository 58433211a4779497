"""`folio export`: a trained model as ONNX (checked under onnxruntime) or TorchScript.

    folio export --model runs/lm --format onnx                 # runs/lm/model.onnx
    folio export --model runs/imdb --format onnx --quantize    # also runs/imdb/model.int8.onnx
    folio export --model runs/lm --format torchscript          # runs/lm/model.torchscript.pt
    folio export --model runs/dates --format onnx              # runs/dates/encoder.onnx + decoder_step.onnx

What is exported is each task's choice (its `export.py`, named in `folio.tasks.TASKS`, builds `Graph`s from
`folio.export_api`, the small module tasks import instead of this host): one graph `model`
for a language model or a classifier, an `encoder` and a `decoder_step` graph for a translation model (then
`out` is a folder, and the report's `decoding` tells a decoding loop what it needs). Batch and length are
dynamic.

Every export is run on fresh inputs and compared with PyTorch; a difference over 1e-4 is an error.
Ids come from the checkpoint's own vocabulary or tokenizer files, which stay beside the export.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from folio.errors import CheckpointError, ConfigError
from folio.export_api import Graph
from folio.tasks import task_of
from folio.training.checkpoint import check_output

TOLERANCE = 1e-4


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


def _signature(graph: Graph, sample: tuple[Tensor, ...], outputs: tuple[Tensor, ...]) -> dict:
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
    if out is not None:
        check_output(out, directory=None)  # a file, or a translation model's folder: which, the task says below
    task = task_of(directory)
    if task.export is None:
        raise CheckpointError(f"{directory}/config.json: task {task.name!r} cannot be exported")
    graphs, decoding = task.hook("export")(directory, fmt)
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    if decoding is None:
        paths = [Path(out) if out else directory / f"model{suffix}"]
        check_output(paths[0], directory=False)
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


def _export_graph(graph: Graph, fmt: str, out: Path, quantize: bool) -> dict:
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
    # 7-bit weights (reduce_range): x86 CPUs without VNNI multiply u8 by s8 in 16-bit pairs that saturate at
    # full range (a drift of 0.7 on a GRU's logits on an AVX2 machine, against 0.02 with VNNI)
    quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, reduce_range=True)
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
